package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// EncryptionWireGuard is the value of Options.Encryption (and of
// `membrane dev up --encryption`) that turns WireGuard on.
const EncryptionWireGuard = "wireguard"

// wireGuardSocketDir is where wgctrl and wireguard-go put UAPI sockets.
// It is one directory for the whole machine, while the local cluster's
// nodes are only network namespaces: two nodes' agents would both create
// membrane_wg0.sock there. A real node runs its agent in a container,
// with a mount namespace of its own; the harness does the same for each
// agent with encryption on (see encryptionArgv), so each sees a private,
// empty tmpfs at this path and the stock wgctrl finds its own device only.
const wireGuardSocketDir = "/run/wireguard"

// encryptionFlags are the agent flags the harness sets for encryption.
var encryptionFlags = []string{"--enable-encryption", "--encryption-type=", "--state-dir="}

// NodeAgentStateDir is where a node's agent keeps its state (the
// WireGuard private key).
func (l Layout) NodeAgentStateDir(node string) string {
	return filepath.Join(l.NodeDir(node), "agent")
}

// encryptionArgv wraps the agent's command line for the encryption mode:
// "" leaves it as it is; "wireguard" adds the flags and starts the agent in
// a mount namespace of its own with a private tmpfs on /run/wireguard (it
// goes away with the agent, and so does the UAPI socket in it).
func encryptionArgv(agentArgv []string, mode string, l Layout, node string) []string {
	if mode == "" {
		return agentArgv
	}
	argv := append([]string{}, agentArgv...)
	argv = append(argv, "--enable-encryption", "--encryption-type="+mode, "--state-dir="+l.NodeAgentStateDir(node))
	script := "mkdir -p " + wireGuardSocketDir +
		" && mount -t tmpfs -o mode=0700,size=1m membrane-wireguard " + wireGuardSocketDir +
		` && exec "$@"`
	return append([]string{"unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script, "membrane-agent"}, argv...)
}

// plainAgentArgv undoes encryptionArgv.
func plainAgentArgv(argv []string) []string {
	start := 0
	for i, a := range argv {
		if filepath.Base(a) == "membrane-agent" && filepath.IsAbs(a) {
			start = i
			break
		}
	}
	var out []string
	for _, a := range argv[start:] {
		drop := false
		for _, f := range encryptionFlags {
			if a == f || (strings.HasSuffix(f, "=") && strings.HasPrefix(a, f)) {
				drop = true
			}
		}
		if !drop {
			out = append(out, a)
		}
	}
	return out
}

// SetEncryption restarts every node's agent with encryption mode ("" for
// off, or "wireguard"), as a rolling change of the agent DaemonSet's flags
// would: pods keep running; the agents converge the datapath.
func SetEncryption(ctx context.Context, log *slog.Logger, cluster, mode string) error {
	if mode != "" && mode != EncryptionWireGuard {
		return fmt.Errorf("encryption %q: must be %q or empty", mode, EncryptionWireGuard)
	}
	s, err := Load(cluster)
	if err != nil {
		return err
	}
	if s.Install == InstallHelm {
		return fmt.Errorf("cluster %q: Membrane is installed by helm: change encryption with helm upgrade --set encryption.enabled=...", cluster)
	}
	l := s.Layout()
	for i, p := range s.Processes {
		node, ok := strings.CutPrefix(p.Name, "membrane-agent/")
		if !ok {
			continue
		}
		if err := p.stop(5 * time.Second); err != nil {
			return err
		}
		argv := encryptionArgv(plainAgentArgv(p.Argv), mode, l, node)
		np, err := startDetached(p.Name, p.Netns, p.Cgroup, p.Log, argv)
		if err != nil {
			return err
		}
		s.Processes[i] = np
		log.Info("agent restarted", "cluster", cluster, "node", node, "encryption", mode)
	}
	s.Encryption = mode
	if err := s.save(); err != nil {
		return err
	}
	return waitAgents(ctx, s)
}

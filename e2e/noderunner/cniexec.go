package noderunner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// nodeExec runs CNI plugins as a node's container runtime does, with the
// node's files: all nodes of a local cluster share one machine, so a
// plugin runs in a mount namespace of its own where the node's host paths
// (/opt/cni/bin, /var/lib/membrane, /var/run/membrane, ...) are the node's
// directories, on an empty root with /proc, /sys, /dev and the pods'
// network namespaces in /run/netns (CNI_NETNS says so). The paths of a
// configuration the node's agent wrote then mean what they mean on that
// node.
type nodeExec struct {
	version.PluginDecoder
	rt       *runtime.Runtime
	paths    hostPaths
	mounts   []runtime.Mount
	netnsDir string // the pods' network namespaces on this machine
	rootfs   string // an empty directory, the plugin's read-only root
	stateDir string // per-call directories below it
	calls    atomic.Uint64
}

// podNetnsPath is where a plugin sees the pods' network namespaces.
const podNetnsPath = "/run/netns"

func newNodeExec(cfg Config, rt *runtime.Runtime) (*nodeExec, error) {
	dir := filepath.Join(cfg.StateDir, "cni", "exec")
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, fmt.Errorf("create the CNI plugins' root: %w", err)
	}
	var mounts []runtime.Mount
	for _, m := range cfg.HostPaths {
		// A node path whose directory is missing (bpffs not mounted) is
		// not there for the plugin either.
		if _, err := os.Stat(m.Source); err == nil {
			mounts = append(mounts, runtime.Mount{Source: m.Source, Target: m.Path})
		}
	}
	// After the host paths: the machine's directory may be below one of
	// them (/run/membrane), the plugin's is not.
	mounts = append(mounts, runtime.Mount{Source: cfg.PodNetnsDir, Target: podNetnsPath})
	return &nodeExec{rt: rt, paths: newHostPaths(cfg.HostPaths), mounts: mounts, netnsDir: cfg.PodNetnsDir, rootfs: rootfs, stateDir: dir}, nil
}

// FindInPath finds plugin in the node's directories paths and returns its
// path on the node.
func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	if plugin == "" || filepath.Base(plugin) != plugin {
		return "", fmt.Errorf("CNI plugin %q: must be a file name", plugin)
	}
	for _, dir := range paths {
		p := filepath.Join(dir, plugin)
		src, _, err := e.paths.resolve(p)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(src); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in the node's path %v", plugin, paths)
}

// ExecPlugin runs the plugin at the node path pluginPath.
func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	id := fmt.Sprintf("cni-%d-%d", os.Getpid(), e.calls.Add(1))
	spec := runtime.Spec{
		ID:       id,
		RootFS:   e.rootfs,
		StateDir: filepath.Join(e.stateDir, id),
		Argv:     []string{pluginPath},
		Env:      e.pluginEnv(environ),
		Mounts:   e.mounts,
		Security: runtime.Security{Privileged: true},
	}
	code, err := e.rt.Run(ctx, spec, bytes.NewReader(stdin), &stdout, &stderr)
	if err != nil {
		return nil, fmt.Errorf("run CNI plugin %s: %w", pluginPath, err)
	}
	if code != 0 {
		return nil, pluginError(code, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// pluginEnv is environ with CNI_NETNS where the plugin sees it.
func (e *nodeExec) pluginEnv(environ []string) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		if ns, ok := strings.CutPrefix(kv, "CNI_NETNS="); ok && filepath.Dir(ns) == e.netnsDir {
			kv = "CNI_NETNS=" + filepath.Join(podNetnsPath, filepath.Base(ns))
		}
		env = append(env, kv)
	}
	return env
}

// pluginError is the CNI error a failed plugin printed, or one that says
// what it wrote to stderr.
func pluginError(code int, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) > 0:
		if err := json.Unmarshal(stdout, e); err != nil || e.Msg == "" {
			return fmt.Errorf("CNI plugin exited with %d and printed %q", code, bytes.TrimSpace(stdout))
		}
		return e
	case len(stderr) > 0:
		return fmt.Errorf("CNI plugin exited with %d: %s", code, bytes.TrimSpace(stderr))
	default:
		return fmt.Errorf("CNI plugin exited with %d and no message", code)
	}
}

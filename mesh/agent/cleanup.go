package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	gwnode "github.com/membrane-mesh/membrane/gateway/node"
	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/cni/install"
	"github.com/membrane-mesh/membrane/mesh/l2announce"
	"github.com/membrane-mesh/membrane/mesh/tproxy"
)

// nodeAnnotations are the annotations the agent writes on its Node.
func nodeAnnotations() []string {
	return []string{wireguard.AnnotationPublicKey, agenttunnel.CertAnnotation, v1alpha1.AnnotationProxyRejected}
}

// ValidateCleanup reports the fields Cleanup cannot work with, by flag name.
func (c Config) ValidateCleanup() error {
	var errs []error
	if c.BPFPinDir == "" || !filepath.IsAbs(c.BPFPinDir) {
		errs = append(errs, fmt.Errorf("--bpf-pin-dir %q: must be an absolute path on bpffs", c.BPFPinDir))
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("--state-dir %q: must be an absolute path", c.StateDir))
	}
	if c.APISocket != "" && !filepath.IsAbs(c.APISocket) {
		errs = append(errs, fmt.Errorf("--api-socket %q: must be an absolute path", c.APISocket))
	}
	if c.CNI.ConfDir != "" {
		if !filepath.IsAbs(c.CNI.ConfDir) {
			errs = append(errs, fmt.Errorf("--cni-conf-dir %q: must be an absolute path", c.CNI.ConfDir))
		}
		if err := validConfName(c.CNI.ConfName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes from the node everything the agent with cfg programmed
// there, in the network namespace of the calling thread: the CNI
// configuration it wrote (the plugin binary stays, for the DEL of the pods
// left), the L7 proxy plumbing, the Gateway addresses, the policy programs
// on pod interfaces, the socket load balancer on the cgroup, every pinned
// map and link and the pin directory, the WireGuard device with its routing
// and key, the learned DNS names, and the agent's API socket and state
// directory when they are left empty. With a client it also withdraws the
// agent's annotations from the Node (best effort: a failure
// is logged, not returned). It logs one line per object it removes, removes
// only objects by the agent's own names, marks and tables, and is a no-op
// when run again. Run it after the agent has stopped.
func Cleanup(ctx context.Context, log *slog.Logger, cfg Config, client kubernetes.Interface) error {
	if err := cfg.ValidateCleanup(); err != nil {
		return err
	}
	var errs []error
	step := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if cfg.APISocket != "" && serving(cfg.APISocket) {
		log.Warn("the agent still serves its API socket: stop it first, or it programs the node again", "socket", cfg.APISocket)
	}
	// The CNI configuration first: no new pod gets an interface of
	// Membrane's while its datapath goes.
	if cfg.CNI.ConfDir != "" {
		step("remove the CNI config", removeCNIConfig(log.With("component", "cni"), cfg.CNI))
	}
	// Proxy plumbing first: nothing is marked for a proxy any more once
	// the policy programs are gone.
	step("remove L7 proxy plumbing", tproxy.Cleanup(ctx, log.With("component", "proxy")))
	step("withdraw gateway addresses", gwnode.Cleanup(log.With("component", "gateway")))
	step("withdraw load-balancer addresses", l2announce.Remove(netip.Addr{}))
	step("remove the gateway source address", cleanupIngressAddr(log.With("component", "gateway")))
	step("remove policy datapath", bpfpolicy.Cleanup(log.With("component", "policy-datapath"), cfg.BPFPinDir))
	step("remove socket LB", socklb.Cleanup(log.With("component", "socklb"), cfg.BPFPinDir))
	if entries, err := os.ReadDir(cfg.BPFPinDir); err == nil {
		var left []string
		for _, e := range entries {
			left = append(left, e.Name())
		}
		log.Warn("pin directory kept: it holds pins the agent does not own", "dir", cfg.BPFPinDir, "entries", left)
	}
	step("remove WireGuard", wireguard.Cleanup(log.With("component", "wireguard"), cfg.StateDir))
	if cfg.APISocket != "" {
		step("remove API socket", removeStaleSocket(log, cfg.APISocket))
		step("remove API socket directory", removeEmptyDir(log, filepath.Dir(cfg.APISocket)))
	}
	if f := cfg.fqdnStateFile(); filepath.IsAbs(f) {
		step("remove the learned DNS names", removeFile(log, f))
	}
	if f := cfg.proxyGroupsFile(); f != "" {
		step("remove the proxy's groups", removeFile(log, f))
	}
	if cfg.StateDir != "" {
		step("remove state directory", removeEmptyDir(log, cfg.StateDir))
	}
	if client != nil && cfg.NodeName != "" {
		if err := removeNodeAnnotations(ctx, log, client, cfg.NodeName); err != nil {
			log.Warn("node annotations left", "node", cfg.NodeName, "error", err)
		}
	}
	return errors.Join(errs...)
}

// serving reports whether some process accepts connections on the unix
// socket at path.
func serving(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// removeStaleSocket removes the unix socket at path unless it is served.
func removeStaleSocket(log *slog.Logger, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s is not a socket: left", path)
	}
	if serving(path) {
		log.Warn("API socket left: it is served", "socket", path)
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	log.Info("removed API socket", "socket", path)
	return nil
}

// removeCNIConfig removes the conflist the agent writes and renames back
// the configurations --cni-exclusive set aside; the plugin binary stays,
// for the DEL of the pods still running.
func removeCNIConfig(log *slog.Logger, cni CNIConfig) error {
	removed, err := install.RemoveConfig(cni.ConfDir, cni.ConfName)
	if removed {
		log.Info("removed CNI config", "file", filepath.Join(cni.ConfDir, cni.ConfName))
	}
	restored, rerr := install.RestoreSetAside(cni.ConfDir)
	for _, name := range restored {
		log.Info("restored CNI config set aside", "file", filepath.Join(cni.ConfDir, name))
	}
	return errors.Join(err, rerr)
}

// removeFile removes the file at path; a missing one is fine.
func removeFile(log *slog.Logger, path string) error {
	if err := os.Remove(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	log.Info("removed file", "file", path)
	return nil
}

// removeEmptyDir removes dir if it exists and is empty.
func removeEmptyDir(log *slog.Logger, dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if len(entries) != 0 {
		log.Info("directory kept: not empty", "dir", dir, "entries", len(entries))
		return nil
	}
	if err := os.Remove(dir); errors.Is(err, syscall.EBUSY) {
		// A mount point, as in the chart's cleanup pod (a hostPath):
		// empty, so nothing of the agent's is left in it.
		log.Info("directory kept: empty, but a mount point", "dir", dir)
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	log.Info("removed directory", "dir", dir)
	return nil
}

// removeNodeAnnotations withdraws the agent's annotations from node, the
// ones it has, in one patch.
func removeNodeAnnotations(ctx context.Context, log *slog.Logger, client kubernetes.Interface, node string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("get node %s: %w", node, err)
	}
	remove := map[string]any{}
	for _, a := range nodeAnnotations() {
		if _, ok := n.Annotations[a]; ok {
			remove[a] = nil // JSON merge patch: delete
		}
	}
	if len(remove) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": remove}})
	if err != nil {
		return err
	}
	if _, err := client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "membrane-agent"}); err != nil {
		return fmt.Errorf("patch node %s: %w", node, err)
	}
	for _, a := range nodeAnnotations() {
		if _, ok := remove[a]; ok {
			log.Info("removed node annotation", "annotation", a)
		}
	}
	return nil
}

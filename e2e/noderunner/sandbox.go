package noderunner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

// sandbox is a pod's network namespace with its CNI-assigned address.
type sandbox struct {
	Netns string     `json:"netns"` // "" for hostNetwork pods
	IP    netip.Addr `json:"ip"`
	// Network names the CNI network ADD used: DEL finds its configuration
	// in the CNI cache, even after the node's configuration went away.
	Network string `json:"network,omitempty"`
}

// The node's CNI directories, where a container runtime looks by default.
const (
	cniConfPath = "/etc/cni/net.d"
	cniBinPath  = "/opt/cni/bin"
)

// network calls the CNI plugin the way a container runtime does: with the
// first network configuration in the node's /etc/cni/net.d (read for every
// ADD, so one written later is taken up), the plugin from the node's
// /opt/cni/bin, run with the node's files (nodeExec).
type network struct {
	cni      *libcni.CNIConfig
	confDir  string // the node's /etc/cni/net.d on this machine
	netnsDir string
	ifName   string
}

func newNetwork(cfg Config, exec *nodeExec) (*network, error) {
	confDir, _, err := newHostPaths(cfg.HostPaths).resolve(cniConfPath)
	if err != nil {
		return nil, fmt.Errorf("the node's CNI configuration directory: %w", err)
	}
	cacheDir := filepath.Join(cfg.StateDir, "cni", "cache")
	return &network{
		cni:      libcni.NewCNIConfigWithCacheDir([]string{cniBinPath}, cacheDir, exec),
		confDir:  confDir,
		netnsDir: cfg.PodNetnsDir,
		ifName:   "eth0",
	}, nil
}

// errNetworkNotReady: the node has no network configuration yet.
var errNetworkNotReady = errors.New("network plugin not ready")

// config returns the node's network configuration: the first file of
// /etc/cni/net.d in lexical order, as the kubelet's runtimes take it.
func (n *network) config() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(n.confDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read %s (the node's %s): %w", n.confDir, cniConfPath, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no CNI configuration in %s", errNetworkNotReady, cniConfPath)
	}
	sort.Strings(files)
	first := files[0]
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(first, ".conflist") {
		list, err = libcni.ConfListFromFile(first)
	} else {
		var conf *libcni.NetworkConfig
		if conf, err = libcni.ConfFromFile(first); err == nil {
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", filepath.Base(first), err)
	}
	return list, nil
}

func (n *network) runtimeConf(pod *corev1.Pod, nsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: string(pod.UID),
		NetNS:       nsPath,
		IfName:      n.ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "true"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", string(pod.UID)},
			{"K8S_POD_UID", string(pod.UID)},
		},
	}
}

// setUp creates the pod's namespace and calls CNI ADD.
func (n *network) setUp(ctx context.Context, pod *corev1.Pod) (sandbox, error) {
	conf, err := n.config()
	if err != nil {
		return sandbox{}, err
	}
	nsPath := filepath.Join(n.netnsDir, string(pod.UID))
	if _, err := os.Stat(nsPath); errors.Is(err, os.ErrNotExist) {
		if err := netns.Create(nsPath); err != nil {
			return sandbox{}, err
		}
	}
	res, err := n.cni.AddNetworkList(ctx, conf, n.runtimeConf(pod, nsPath))
	if err != nil {
		_ = n.tearDown(ctx, pod, conf.Name)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		_ = n.tearDown(ctx, pod, conf.Name)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: convert result: %w", pod.Namespace, pod.Name, err)
	}
	if len(r.IPs) == 0 {
		_ = n.tearDown(ctx, pod, conf.Name)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: no IP in result", pod.Namespace, pod.Name)
	}
	ip, ok := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	if !ok {
		_ = n.tearDown(ctx, pod, conf.Name)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: bad IP %s", pod.Namespace, pod.Name, r.IPs[0].Address.IP)
	}
	return sandbox{Netns: nsPath, IP: ip, Network: conf.Name}, nil
}

// tearDown calls CNI DEL with the configuration ADD used for network
// (the CNI cache has it), else the node's current one, and removes the
// namespace. Safe to repeat.
func (n *network) tearDown(ctx context.Context, pod *corev1.Pod, network string) error {
	nsPath := filepath.Join(n.netnsDir, string(pod.UID))
	rt := n.runtimeConf(pod, nsPath)
	var errs []error
	conf, err := n.delConfig(network, rt)
	if err == nil {
		err = n.cni.DelNetworkList(ctx, conf, rt)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("CNI DEL for pod %s/%s: %w", pod.Namespace, pod.Name, err))
	}
	if err := netns.Remove(nsPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *network) delConfig(network string, rt *libcni.RuntimeConf) (*libcni.NetworkConfigList, error) {
	if network != "" {
		raw, _, err := n.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: network}, rt)
		if err == nil && raw != nil {
			return libcni.ConfListFromBytes(raw)
		}
	}
	return n.config()
}

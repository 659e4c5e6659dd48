package noderunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

// sandbox is a pod's network namespace with its CNI-assigned address.
type sandbox struct {
	Netns string     `json:"netns"` // "" for hostNetwork pods
	IP    netip.Addr `json:"ip"`
}

// network calls the CNI plugin the way a container runtime does.
type network struct {
	cni       *libcni.CNIConfig
	conf      *libcni.NetworkConfigList
	netnsDir  string
	cacheDir  string
	ifName    string
	podCIDR   netip.Prefix
	stateRoot string
}

func newNetwork(cfg Config, podCIDR netip.Prefix) (*network, error) {
	cniDir := filepath.Join(cfg.StateDir, "cni")
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "membrane",
		"plugins": []map[string]any{{
			"type":        cfg.CNIPlugin,
			"podCIDR":     podCIDR.String(),
			"dataDir":     filepath.Join(cniDir, "ipam"),
			"logFile":     filepath.Join(cniDir, "plugin.log"),
			"agentSocket": cfg.AgentSocket,
		}},
	}
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode CNI config: %w", err)
	}
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return nil, fmt.Errorf("create CNI dir: %w", err)
	}
	// Written out too, where a user looks for it.
	if err := os.WriteFile(filepath.Join(cniDir, "10-membrane.conflist"), raw, 0o644); err != nil {
		return nil, fmt.Errorf("write CNI config: %w", err)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("parse CNI config: %w", err)
	}
	cacheDir := filepath.Join(cniDir, "cache")
	return &network{
		cni:       libcni.NewCNIConfigWithCacheDir([]string{cfg.CNIBinDir}, cacheDir, nil),
		conf:      list,
		netnsDir:  cfg.PodNetnsDir,
		cacheDir:  cacheDir,
		ifName:    "eth0",
		podCIDR:   podCIDR,
		stateRoot: cfg.StateDir,
	}, nil
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
	nsPath := filepath.Join(n.netnsDir, string(pod.UID))
	if _, err := os.Stat(nsPath); errors.Is(err, os.ErrNotExist) {
		if err := netns.Create(nsPath); err != nil {
			return sandbox{}, err
		}
	}
	res, err := n.cni.AddNetworkList(ctx, n.conf, n.runtimeConf(pod, nsPath))
	if err != nil {
		_ = n.tearDown(ctx, pod)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		_ = n.tearDown(ctx, pod)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: convert result: %w", pod.Namespace, pod.Name, err)
	}
	if len(r.IPs) == 0 {
		_ = n.tearDown(ctx, pod)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: no IP in result", pod.Namespace, pod.Name)
	}
	ip, ok := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	if !ok {
		_ = n.tearDown(ctx, pod)
		return sandbox{}, fmt.Errorf("CNI ADD for pod %s/%s: bad IP %s", pod.Namespace, pod.Name, r.IPs[0].Address.IP)
	}
	return sandbox{Netns: nsPath, IP: ip}, nil
}

// tearDown calls CNI DEL and removes the namespace. Safe to repeat.
func (n *network) tearDown(ctx context.Context, pod *corev1.Pod) error {
	nsPath := filepath.Join(n.netnsDir, string(pod.UID))
	var errs []error
	if err := n.cni.DelNetworkList(ctx, n.conf, n.runtimeConf(pod, nsPath)); err != nil {
		errs = append(errs, fmt.Errorf("CNI DEL for pod %s/%s: %w", pod.Namespace, pod.Name, err))
	}
	if err := netns.Remove(nsPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

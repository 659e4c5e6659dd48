// Package noderunner plays the kubelet for one node of a local cluster: it
// registers the Node, keeps its Lease, and runs the Pods bound to it as
// processes in their own network namespaces, created through the CNI plugin.
package noderunner

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Config is what a node runner needs to know; `membrane dev up` writes it.
type Config struct {
	Cluster    string `json:"cluster"`
	NodeName   string `json:"nodeName"`
	NodeIP     string `json:"nodeIP"`
	Kubeconfig string `json:"kubeconfig"`
	// RoutesKubeconfig may read every Node: the Node authorizer lets a
	// node's own identity read only its own Node.
	RoutesKubeconfig string `json:"routesKubeconfig"`
	// KubeletCert/Key serve the kubelet API; ClientCA verifies the API server.
	KubeletCert string `json:"kubeletCert"`
	KubeletKey  string `json:"kubeletKey"`
	ClientCA    string `json:"clientCA"`
	KubeletPort int    `json:"kubeletPort"`
	// StateDir holds per-pod state (volumes, logs, CNI data, and the record
	// from which a restarted runner adopts the pod).
	StateDir string `json:"stateDir"`
	// PodNetnsDir is where pod network namespaces are pinned.
	PodNetnsDir string `json:"podNetnsDir"`
	// CgroupDir is the node's cgroup v2 subtree; pods go below pods/.
	CgroupDir string `json:"cgroupDir"`
	ImagesDir string `json:"imagesDir"`
	// StaticCNI, when set, is a membrane-cni binary the runner installs at
	// start with a network configuration of its own (the node's PodCIDR,
	// no agent) into the node's /opt/cni/bin and /etc/cni/net.d, as an
	// administrator installs a plain CNI: for clusters without Membrane.
	// Otherwise the node's configuration is whatever its agent installs
	// there, and pods wait for it.
	StaticCNI string `json:"staticCNI,omitempty"`
	// ControlPlaneNetns is the namespace that must route replies to this
	// node's pods (the API server's); the runner installs its PodCIDR route there.
	ControlPlaneNetns string `json:"controlPlaneNetns"`
	ClusterDNS        string `json:"clusterDNS"`
	ClusterDomain     string `json:"clusterDomain"`
	KubeletVersion    string `json:"kubeletVersion"`
	// HostPaths give the host paths pods name in hostPath volumes their
	// place on this node (the longest matching path wins). A hostPath
	// outside them is refused, except the read-only system paths
	// (/proc, /lib/modules, /sys/kernel/btf, ...): see systemHostPaths.
	HostPaths []HostPathMapping `json:"hostPaths,omitempty"`
	// OwnImagesDir is an image store searched before ImagesDir: the images
	// of Membrane's own binaries that `make build` lays out next to them.
	OwnImagesDir string `json:"ownImagesDir,omitempty"`
}

// Validate reports the first field at fault.
func (c Config) Validate() error {
	switch {
	case c.Cluster == "":
		return errors.New("config: cluster is empty")
	case c.NodeName == "":
		return errors.New("config: nodeName is empty")
	case c.Kubeconfig == "" || c.RoutesKubeconfig == "":
		return errors.New("config: kubeconfig and routesKubeconfig must be set")
	case c.StateDir == "" || c.PodNetnsDir == "" || c.CgroupDir == "" || c.ImagesDir == "":
		return errors.New("config: stateDir, podNetnsDir, cgroupDir and imagesDir must be set")
	case c.StaticCNI != "" && !filepath.IsAbs(c.StaticCNI):
		return fmt.Errorf("config: staticCNI %q must be an absolute path", c.StaticCNI)
	case c.KubeletPort <= 0 || c.KubeletPort > 65535:
		return fmt.Errorf("config: kubeletPort %d out of range", c.KubeletPort)
	}
	if err := validateHostPaths(c.HostPaths); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(c.NodeIP); err != nil {
		return fmt.Errorf("config: nodeIP %q: %w", c.NodeIP, err)
	}
	if _, err := netip.ParseAddr(c.ClusterDNS); err != nil {
		return fmt.Errorf("config: clusterDNS %q: %w", c.ClusterDNS, err)
	}
	return nil
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read node config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, fmt.Errorf("parse node config %s: %w", path, err)
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	return c, c.Validate()
}

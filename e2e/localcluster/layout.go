// Package localcluster runs a Kubernetes cluster made of real parts on one
// machine: etcd, kube-apiserver, kube-controller-manager and kube-scheduler in
// a control-plane network namespace, and one node runner per node namespace,
// all joined by an underlay bridge; Membrane goes onto it as onto any
// cluster, with the pinned helm and charts/membrane.
package localcluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/membrane-mesh/membrane/e2e/noderunner"
)

// Defaults of a local cluster.
const (
	DefaultName        = "membrane"
	DefaultNodes       = 2
	DefaultPodCIDR     = "10.244.0.0/16"
	DefaultServiceCIDR = "10.96.0.0/16"
	DefaultStateRoot   = "/var/lib/membrane/dev"
	DefaultRunRoot     = "/run/membrane/dev"
	NetnsDir           = "/run/netns"
	KubeletPort        = 10250
	AgentPort          = 9890
	BPFRoot            = "/sys/fs/bpf/membrane"
	APIServerPort      = 6443
	ClusterDomain      = "cluster.local"
	maxNodes           = 50
)

// validName reports whether name is a DNS label of at most 20 characters.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 20 || name[0] < 'a' || name[0] > 'z' || name[len(name)-1] == '-' {
		return false
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Options are what a user chooses for a cluster.
type Options struct {
	Name        string
	Nodes       int
	PodCIDR     string
	ServiceCIDR string
	// ToolsDir holds bin/ (kube-apiserver, etcd, ...) and images/.
	ToolsDir string
	// BinDir holds Membrane's own binaries (membrane, membrane-cni,
	// membrane-agent).
	BinDir string
	// NoMembrane leaves the cluster bare: the chart is not installed (no
	// agents, operator or node Envoys, so no Service translation) and
	// there is no cluster DNS.
	NoMembrane bool
	// Encryption is "" (off) or "wireguard": node-to-node pod traffic
	// through each node's WireGuard device (the chart's encryption values).
	Encryption string
	// IdentityProvider is "" (no workload identities), "builtin" (the
	// operator's SPIFFE CA) or "spire" (SPIRE server and agents): the
	// chart's authentication.mutual values.
	IdentityProvider string
	// ClusterID is the cluster's id in a cluster mesh (1-255; 0: none),
	// the chart's cluster.id beside cluster.name = Name.
	ClusterID int
	// HelmSet are values for the chart over the local cluster's, as
	// `helm --set` takes them (key=value).
	HelmSet []string
	// UnderlayMTU is the MTU of the nodes' links to the underlay bridge
	// (0: the kernel's default, 1500), as a cloud network's (1460, 9001)
	// would be.
	UnderlayMTU int
}

// The range of Options.UnderlayMTU: IPv6's minimum MTU to jumbo frames.
const (
	minUnderlayMTU = 1280
	maxUnderlayMTU = 9000
)

// Validate reports the first option at fault.
func (o Options) Validate() error {
	if !validName(o.Name) {
		return fmt.Errorf("--name %q: must be a DNS label of at most 20 characters (lower-case letters, digits, '-')", o.Name)
	}
	if o.Nodes < 1 || o.Nodes > maxNodes {
		return fmt.Errorf("--nodes %d: must be between 1 and %d", o.Nodes, maxNodes)
	}
	pods, err := netip.ParsePrefix(o.PodCIDR)
	if err != nil || !pods.Addr().Is4() || pods.Bits() > 22 {
		return fmt.Errorf("--pod-cidr %q: must be an IPv4 prefix of /22 or larger (each node takes a /24)", o.PodCIDR)
	}
	svc, err := netip.ParsePrefix(o.ServiceCIDR)
	if err != nil || !svc.Addr().Is4() || svc.Bits() > 24 {
		return fmt.Errorf("--service-cidr %q: must be an IPv4 prefix of /24 or larger", o.ServiceCIDR)
	}
	if pods.Overlaps(svc) {
		return fmt.Errorf("--pod-cidr %s overlaps --service-cidr %s", pods, svc)
	}
	if o.Encryption != "" && o.Encryption != EncryptionWireGuard {
		return fmt.Errorf("--encryption %q: must be %s (or unset)", o.Encryption, EncryptionWireGuard)
	}
	if o.IdentityProvider != "" && o.IdentityProvider != IdentityBuiltin && o.IdentityProvider != IdentitySPIRE {
		return fmt.Errorf("--identity-provider %q: must be %s or %s (or unset)", o.IdentityProvider, IdentityBuiltin, IdentitySPIRE)
	}
	if o.NoMembrane && o.IdentityProvider != "" {
		return fmt.Errorf("--identity-provider %q: the agents keep identities, but --no-membrane installs none", o.IdentityProvider)
	}
	if o.NoMembrane && len(o.HelmSet) > 0 {
		return fmt.Errorf("--set %q: chart values, but --no-membrane installs no chart", o.HelmSet[0])
	}
	if o.NoMembrane && o.Encryption != "" {
		return fmt.Errorf("--encryption %q: the agents encrypt, but --no-membrane installs none", o.Encryption)
	}
	for _, s := range o.HelmSet {
		if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
			return fmt.Errorf("--set %q: must be KEY=VALUE", s)
		}
	}
	if o.ClusterID < 0 || o.ClusterID > 255 {
		return fmt.Errorf("--cluster-id %d: must be 1 to 255 (0: no cluster mesh)", o.ClusterID)
	}
	if o.ClusterID != 0 && o.NoMembrane {
		return fmt.Errorf("--cluster-id %d: needs Membrane (drop --no-membrane)", o.ClusterID)
	}
	if o.UnderlayMTU != 0 && (o.UnderlayMTU < minUnderlayMTU || o.UnderlayMTU > maxUnderlayMTU) {
		return fmt.Errorf("--underlay-mtu %d: must be %d to %d (0: 1500)", o.UnderlayMTU, minUnderlayMTU, maxUnderlayMTU)
	}
	if o.ToolsDir == "" || o.BinDir == "" {
		return fmt.Errorf("tools and binary directories must be set")
	}
	return nil
}

// Layout names every path, link and address of one cluster. It is derived
// from the name and the cluster's index, so `down` can find everything again.
type Layout struct {
	Name  string
	Index int // 1..250: the third octet of the underlay subnet
}

func (l Layout) hash() string {
	sum := sha256.Sum256([]byte(l.Name))
	return hex.EncodeToString(sum[:])[:6]
}

// StateDir holds the cluster's PKI, kubeconfigs, etcd data, logs and node state.
func (l Layout) StateDir() string { return filepath.Join(DefaultStateRoot, l.Name) }

// RunDir holds runtime files such as pod network namespaces.
func (l Layout) RunDir() string { return filepath.Join(DefaultRunRoot, l.Name) }

// StateFile is the cluster's record.
func (l Layout) StateFile() string { return filepath.Join(l.StateDir(), "cluster.json") }

// Kubeconfig is the admin kubeconfig.
func (l Layout) Kubeconfig() string { return filepath.Join(l.StateDir(), "kubeconfig") }

// PKIDir holds certificates and keys.
func (l Layout) PKIDir() string { return filepath.Join(l.StateDir(), "pki") }

// LogDir holds one log file per process.
func (l Layout) LogDir() string { return filepath.Join(l.StateDir(), "logs") }

// NodeName is the Kubernetes name of node i (1-based).
func (l Layout) NodeName(i int) string { return fmt.Sprintf("%s-node%d", l.Name, i) }

// NodeDir holds a node runner's state.
func (l Layout) NodeDir(node string) string { return filepath.Join(l.StateDir(), "nodes", node) }

// ControlPlaneNetns is the namespace of etcd and the control-plane processes.
func (l Layout) ControlPlaneNetns() string {
	return filepath.Join(NetnsDir, "membrane-"+l.Name+"-cp")
}

// NodeNetns is the namespace of node i.
func (l Layout) NodeNetns(node string) string { return filepath.Join(NetnsDir, "membrane-"+node) }

// Bridge is the underlay bridge in the root namespace.
func (l Layout) Bridge() string { return "mbr" + l.hash() }

// ControlPlaneLink is the root-side veth of the control-plane namespace.
func (l Layout) ControlPlaneLink() string { return "mbc" + l.hash() }

// NodeLink is the root-side veth of node i.
func (l Layout) NodeLink(i int) string { return fmt.Sprintf("mbn%s%d", l.hash(), i) }

// UnderlayIf is the name of the underlay interface inside node and
// control-plane namespaces.
func (l Layout) UnderlayIf() string { return "eth0" }

// Subnet is the underlay subnet: 198.18.0.0/15 is reserved for benchmarking
// and never routed anywhere.
func (l Layout) Subnet() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(l.Index), 0}), 24)
}

// HostIP is the root namespace's address on the bridge.
func (l Layout) HostIP() netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(l.Index), 1}) }

// APIServerIP is the control-plane namespace's address.
func (l Layout) APIServerIP() netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(l.Index), 2}) }

// NodeIP is node i's address.
func (l Layout) NodeIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(l.Index), byte(10 + i)})
}

// AddressPool is LoadBalancerPool as "first-last".
func (l Layout) AddressPool() string {
	start, stop := l.LoadBalancerPool()
	return start + "-" + stop
}

// LoadBalancerPool is the range of the MembraneLoadBalancerIPPool
// "default" that `up` creates: the addresses of LoadBalancer Services,
// Gateways and Ingresses, on the top of the underlay subnet, which no node
// uses (the host reaches them through the bridge).
func (l Layout) LoadBalancerPool() (start, stop string) {
	return fmt.Sprintf("198.18.%d.150", l.Index), fmt.Sprintf("198.18.%d.250", l.Index)
}

// APIServerURL is what kubeconfigs point at.
func (l Layout) APIServerURL() string {
	return fmt.Sprintf("https://%s:%d", l.APIServerIP(), APIServerPort)
}

// CgroupDir is the cluster's cgroup v2 subtree below the cgroup2 mount.
func (l Layout) CgroupDir(cgroupRoot string) string {
	return filepath.Join(cgroupRoot, "membrane", l.Name)
}

// BPFDir holds the cluster's pinned eBPF maps and links.
func (l Layout) BPFDir() string { return filepath.Join(BPFRoot, l.Name) }

// NodeBPFDir is one node's part of the machine's bpffs, its hostPath
// /sys/fs/bpf.
func (l Layout) NodeBPFDir(node string) string { return filepath.Join(l.BPFDir(), node) }

// NodeAgentPinDir is where node's agent pins its maps and links: the chart's
// --bpf-pin-dir, /sys/fs/bpf/membrane.
func (l Layout) NodeAgentPinDir(node string) string {
	return filepath.Join(l.NodeBPFDir(node), "membrane")
}

// NodeAgentStateDir is where node's agent keeps its state (the WireGuard
// private key): the chart's agent.stateDir, /var/lib/membrane/agent.
func (l Layout) NodeAgentStateDir(node string) string {
	return filepath.Join(l.NodeHostDir(node), "var/lib/membrane/agent")
}

// AgentSocket is where node's agent serves its API to root on the host:
// /var/run/membrane/agent/api.sock of the node (see addons/membrane.values.yaml).
func (l Layout) AgentSocket(node string) string {
	return filepath.Join(l.NodeRunDir(node), "membrane", "agent", "api.sock")
}

// NodeHostDir holds the node's own part of the host's persistent files
// (a pod's hostPath /var/lib/membrane is NodeHostDir/var/lib/membrane).
func (l Layout) NodeHostDir(node string) string { return filepath.Join(l.NodeDir(node), "host") }

// NodeRunDir holds the node's own part of the host's /run.
func (l Layout) NodeRunDir(node string) string { return filepath.Join(l.RunDir(), "nodes", node) }

// NodeHostPaths maps the host paths a DaemonSet pod mounts to node's part
// of the machine: its bpffs pin directory, cgroup v2 subtree, state, run
// and CNI directories (the node runner takes the CNI configuration and
// plugins from the last two, as a container runtime does). cgroupRoot is
// the cgroup2 mount.
func (l Layout) NodeHostPaths(node, cgroupRoot string) []noderunner.HostPathMapping {
	run := filepath.Join(l.NodeRunDir(node), "membrane")
	return []noderunner.HostPathMapping{
		{Path: "/sys/fs/bpf", Source: l.NodeBPFDir(node)},
		{Path: "/sys/fs/cgroup", Source: filepath.Join(l.CgroupDir(cgroupRoot), node)},
		{Path: "/var/lib/membrane", Source: filepath.Join(l.NodeHostDir(node), "var/lib/membrane")},
		{Path: "/var/run/membrane", Source: run},
		{Path: "/run/membrane", Source: run},
		{Path: "/etc/cni/net.d", Source: filepath.Join(l.NodeHostDir(node), "etc/cni/net.d")},
		{Path: "/opt/cni/bin", Source: filepath.Join(l.NodeHostDir(node), "opt/cni/bin")},
	}
}

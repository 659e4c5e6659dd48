package agentapi

import (
	"net/netip"
	"time"

	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/lb"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// ServiceList is the answer of PathServices.
type ServiceList struct {
	Node     string         `json:"node"`
	Services []ServiceEntry `json:"services"`
}

// ServiceEntry is one programmed frontend; ID is its reverse-NAT ID, the
// number `membrane service list` shows.
type ServiceEntry struct {
	ID       uint16 `json:"id"`
	lb.Entry `json:",inline"`
}

// BPFLBList is the answer of PathBPFLB: the raw maps.
type BPFLBList struct {
	Node string `json:"node"`
	Dump LBDump `json:"dump"`
}

// Endpoint states (EndpointEntry.State).
const (
	StateReady               = "ready"
	StateWaitingForIdentity  = "waiting-for-identity"
	StateWaitingForInterface = "waiting-for-interface"
	// StateWaitingForProxy: its new policy redirects to ports the node's
	// L7 proxy does not run yet; its previous policy stays until it does.
	StateWaitingForProxy = "waiting-for-proxy"
	StateError           = "error"
)

// EndpointList is the answer of PathEndpoints.
type EndpointList struct {
	Node      string          `json:"node"`
	Endpoints []EndpointEntry `json:"endpoints"`
}

// EndpointEntry is one local pod and its policy enforcement.
type EndpointEntry struct {
	// ID is the endpoint's number in the policy map; 0 until programmed.
	ID        uint16     `json:"id,omitempty"`
	Namespace string     `json:"namespace"`
	Pod       string     `json:"pod"`
	IP        netip.Addr `json:"ip"`
	Ifindex   int        `json:"ifindex,omitempty"`
	Interface string     `json:"interface,omitempty"`
	Identity  uint32     `json:"identity,omitempty"`
	Labels    []string   `json:"labels,omitempty"`
	// EnforceIngress/EnforceEgress: a policy selects the endpoint in that
	// direction, so only what policy allows passes.
	EnforceIngress bool `json:"enforceIngress"`
	EnforceEgress  bool `json:"enforceEgress"`
	// Rules counts its policy map rules.
	Rules int `json:"rules"`
	// State is ready, waiting-for-identity, waiting-for-interface,
	// waiting-for-proxy or error.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// PolicyEntry is the answer of EndpointPolicyPath: the policy resolved for
// one local endpoint, with the rules each entry comes from.
type PolicyEntry struct {
	Node     string        `json:"node"`
	Endpoint EndpointEntry `json:"endpoint"`
	Result   policy.Result `json:"policy"`
	// Problems are parts of policies that could not be applied to it.
	Problems []string `json:"problems,omitempty"`
}

// BPFPolicyList is the answer of PathBPFPolicy: the raw policy maps.
type BPFPolicyList struct {
	Node string     `json:"node"`
	Dump PolicyDump `json:"dump"`
}

// IPCacheLookup is the answer of IPCachePath: the security identity the
// node's datapath gives an address.
type IPCacheLookup struct {
	Node string     `json:"node"`
	Addr netip.Addr `json:"addr"`
	// Identity is that of the longest ipcache prefix holding Addr; world
	// (2) when none does (Found false).
	Identity uint32 `json:"identity"`
	Found    bool   `json:"found"`
}

// NodeStatus is the answer of PathStatus: one node's agent in brief.
type NodeStatus struct {
	Node string `json:"node"`
	// Ready: the initial sync of Services and policy is programmed.
	Ready    bool `json:"ready"`
	Services int  `json:"services"`
	// Endpoints counts the local endpoints by state (ready, …).
	Endpoints map[string]int `json:"endpoints"`
	// Proxy is the node's L7 proxy; nil when L7 policy is disabled.
	Proxy *ProxyStatus `json:"proxy,omitempty"`
	// Encryption is "wireguard" or "disabled".
	Encryption string `json:"encryption"`
	// WireGuard sums up the device when encryption is on.
	WireGuard *WireGuardSummary `json:"wireguard,omitempty"`
	// CNI is the node's CNI configuration the agent installs; nil when it
	// installs none.
	CNI *CNIStatus `json:"cni,omitempty"`
}

// CNIStatus is the membrane-cni configuration list the agent keeps on its
// node.
type CNIStatus struct {
	// Config is the conflist's path on the node.
	Config string `json:"config"`
	// PodCIDR is the PodCIDR of the conflist in place; empty until the
	// agent wrote one.
	PodCIDR string `json:"podCIDR,omitempty"`
	// Error is why the last attempt did not leave the plugin and the
	// conflist in place (such as a node without a PodCIDR yet); empty
	// when it did.
	Error string `json:"error,omitempty"`
}

// WireGuardSummary is the node's WireGuard device in brief (`membrane
// encryption status` has the peers).
type WireGuardSummary struct {
	Backend              string `json:"backend"`
	PublicKeyFingerprint string `json:"publicKeyFingerprint"`
	Peers                int    `json:"peers"`
	Error                string `json:"error,omitempty"`
}

// ProxyStatus is the node Envoy's view: its transparent listener port and
// what it made of the configurations the agent published.
type ProxyStatus struct {
	Port uint16 `json:"port"`
	XDSStatus
}

// XDSStatus is what the node's Envoy made of the published configurations.
type XDSStatus struct {
	// Connected: an Envoy of this node has an open ADS stream.
	Connected bool `json:"connected"`
	// Streams counts the ADS streams opened so far (an Envoy restart opens
	// a new one).
	Streams int `json:"streams"`
	// Published is the version of the newest configuration published.
	Published string `json:"published,omitempty"`
	// Acked is the version of the configuration Envoy runs, every
	// resource of every type (the configuration in force): the one
	// published, or after a rejection the one the rejected resources were
	// taken back to.
	Acked string `json:"acked,omitempty"`
	// AckedAt is when it did.
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// Rejected is set while the newest configuration is one Envoy rejected.
	Rejected *XDSRejection `json:"rejected,omitempty"`
}

// XDSRejection is a NACK: the version Envoy refused, which of its
// resources (of TypeURL) and why.
type XDSRejection struct {
	Version   string    `json:"version"`
	TypeURL   string    `json:"typeURL"`
	Resources []string  `json:"resources,omitempty"`
	Error     string    `json:"error"`
	At        time.Time `json:"at"`
}

// InSync reports whether Envoy runs the newest configuration.
func (s XDSStatus) InSync() bool { return s.Published != "" && s.Acked == s.Published }

// EncryptionStatus is the answer of PathEncryption.
type EncryptionStatus struct {
	Node string `json:"node"`
	// Mode is "wireguard" or "disabled".
	Mode      string           `json:"mode"`
	WireGuard *WireGuardStatus `json:"wireguard,omitempty"`
	Skipped   []SkippedPeer    `json:"skippedPeers"`
	// KeyCreated is when the current private key was stored.
	KeyCreated *time.Time `json:"keyCreated,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// WireGuardStatus is the node's WireGuard device.
type WireGuardStatus struct {
	Device string `json:"device"`
	// Backend is kernel or embedded.
	Backend              string       `json:"backend"`
	ListenPort           int          `json:"listenPort"`
	PublicKeyFingerprint string       `json:"publicKeyFingerprint"`
	Peers                []PeerStatus `json:"peers"`
}

// PeerStatus is one peer of the WireGuard device.
type PeerStatus struct {
	Node                 string    `json:"node"`
	PublicKeyFingerprint string    `json:"publicKeyFingerprint"`
	Endpoint             string    `json:"endpoint"`
	AllowedIPs           []string  `json:"allowedIPs"`
	LatestHandshake      time.Time `json:"latestHandshake,omitzero"`
	ReceiveBytes         int64     `json:"rxBytes"`
	TransmitBytes        int64     `json:"txBytes"`
}

// SkippedPeer is a node that publishes a key that cannot be used.
type SkippedPeer struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
	// Key is the offending annotation value (a public value; shortened).
	Key string `json:"key,omitempty"`
}

// RotateResult is the answer of PathEncryptionRotate.
type RotateResult struct {
	Node                 string `json:"node"`
	PreviousFingerprint  string `json:"previousFingerprint"`
	PublicKeyFingerprint string `json:"publicKeyFingerprint"`
}

// FQDNCacheList is the answer of PathFQDNCache: what the node's DNS proxy
// learned, per pod.
type FQDNCacheList struct {
	Node string `json:"node"`
	// Enabled is false when the node runs no DNS proxy.
	Enabled bool         `json:"enabled"`
	Entries []FQDNRecord `json:"entries"`
}

// FQDNRecord is one address a pod learned for a name.
type FQDNRecord struct {
	// Source is the pod that asked.
	Source    netip.Addr `json:"source"`
	Namespace string     `json:"namespace,omitempty"`
	Pod       string     `json:"pod,omitempty"`
	// Name is canonical (lower case, trailing dot).
	Name    string     `json:"name"`
	IP      netip.Addr `json:"ip"`
	Learned time.Time  `json:"learned"`
	Expires time.Time  `json:"expires"`
	// TTLSeconds is the time left until Expires when listed (0: expired,
	// kept while a connection uses the address).
	TTLSeconds int64 `json:"ttlSeconds"`
}

// ClusterMeshStatus is the answer of PathClusterMesh.
type ClusterMeshStatus struct {
	Node   string             `json:"node"`
	Status clustermesh.Status `json:"status"`
}

// CNIEndpoint is a pod interface the CNI plugin just created.
type CNIEndpoint struct {
	Namespace   string     `json:"namespace"`
	Pod         string     `json:"pod"`
	ContainerID string     `json:"containerID"`
	IP          netip.Addr `json:"ip"`
	// Ifindex is the host-side interface's, in the agent's network namespace.
	Ifindex int `json:"ifindex"`
	// HostMAC and PodMAC are the Ethernet addresses of the host-side and
	// the pod's interface (host routing delivers with them; without them
	// the pod is reached through the node's stack).
	HostMAC string `json:"hostMAC,omitempty"`
	PodMAC  string `json:"podMAC,omitempty"`
}

// CNIEndpointResult is what the agent programmed for a CNIEndpoint: the
// endpoint ID and its identity, the reserved init identity (5) until the
// agent has written the pod's real identity and policy.
type CNIEndpointResult struct {
	ID       uint16 `json:"id"`
	Identity uint32 `json:"identity"`
}

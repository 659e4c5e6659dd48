package clustermesh

import (
	"net/netip"
	"time"
)

// Default names of what `membrane clustermesh connect` creates.
const (
	// SecretName is the Secret (in Membrane's namespace) that holds one
	// kubeconfig per remote cluster, keyed by the remote's name.
	SecretName = "membrane-clustermesh"
	// ReaderName names the ServiceAccount, ClusterRole and binding a
	// cluster grants its remotes: read-only access to what global Services
	// need.
	ReaderName = "membrane-clustermesh-reader"
	// ConfigMapName is the chart's ConfigMap with cluster-name and
	// cluster-id.
	ConfigMapName = "membrane-config"
	// DefaultCacheTTL is how long a remote that stopped answering keeps
	// its backends.
	DefaultCacheTTL = 30 * time.Second
)

// RemoteNode is a node of a remote cluster, as routing needs it.
type RemoteNode struct {
	Name     string         `json:"name"`
	IP       netip.Addr     `json:"ip"`
	PodCIDRs []netip.Prefix `json:"podCIDRs,omitempty"`
	// WireGuardKey is the node's published WireGuard public key, raw
	// ("" when its cluster runs without encryption).
	WireGuardKey string `json:"wireGuardKey,omitempty"`
}

// RemoteStatus is what one agent knows of one remote cluster.
type RemoteStatus struct {
	Cluster string `json:"cluster"`
	// Connected: the remote's API server answers and its lists are in.
	Connected bool `json:"connected"`
	// Withdrawn: its backends are out of the datapath (it has not
	// answered for longer than the cache TTL).
	Withdrawn bool `json:"withdrawn,omitempty"`
	// LastSync is the last time the remote answered.
	LastSync        time.Time `json:"lastSync,omitzero"`
	GlobalServices  int       `json:"globalServices"`
	RemoteEndpoints int       `json:"remoteEndpoints"`
	Nodes           int       `json:"nodes"`
	Error           string    `json:"error,omitempty"`
}

// Status is one agent's view of the mesh.
type Status struct {
	Cluster  string         `json:"cluster"`
	ID       int            `json:"id"`
	CacheTTL string         `json:"cacheTTL"`
	Remotes  []RemoteStatus `json:"remotes"`
}

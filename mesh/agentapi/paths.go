// Package agentapi is the node agent's HTTP API as its clients see it:
// the paths and the JSON types of the answers. It imports no datapath,
// proxy or WireGuard code, so the CLI links none of it (deps_test.go).
package agentapi

import "net/netip"

// API paths the CLI reads (through the API server's node proxy).
const (
	// PathStatus is the node's summary (NodeStatus), `membrane status`.
	PathStatus = "/v1/status"
	// PathServices lists the programmed frontends (ServiceList).
	PathServices = "/v1/services"
	// PathBPFLB dumps the socket load balancer's maps (BPFLBList).
	PathBPFLB = "/v1/bpf/lb"
	// PathEndpoints lists the local endpoints (EndpointList).
	PathEndpoints = "/v1/endpoints"
	// PathBPFPolicy dumps the policy datapath's maps (BPFPolicyList).
	PathBPFPolicy = "/v1/bpf/policy"
	// PathEncryption is the node's encryption (EncryptionStatus).
	PathEncryption = "/v1/encryption"
	// PathFQDNCache lists the names the DNS proxy learned (FQDNCacheList).
	PathFQDNCache = "/v1/fqdn/cache"
	// PathEncryptionRotate rotates the node's WireGuard key (POST,
	// RotateResult).
	PathEncryptionRotate = "/v1/encryption/rotate-key"
)

// EndpointPolicyPath is where a local pod's resolved policy is served
// (PolicyEntry).
func EndpointPolicyPath(namespace, pod string) string {
	return PathEndpoints + "/" + namespace + "/" + pod + "/policy"
}

// IPCachePath is where the identity the datapath gives addr is served
// (IPCacheLookup): one map lookup, not the whole PathBPFPolicy dump.
func IPCachePath(addr netip.Addr) string {
	return PathBPFPolicy + "/ipcache/" + addr.String()
}

// PathClusterMesh is the node's view of the cluster mesh
// (ClusterMeshStatus).
const PathClusterMesh = "/v1/clustermesh"

// PathDebugProfile serves a pprof profile of the agent (query: kind, one
// of ProfileKinds, and for cpu seconds, 1 to MaxProfileSeconds, default
// DefaultProfileSeconds), `membrane debug profile`.
const PathDebugProfile = "/v1/debug/profile"

// ProfileKinds are the profiles PathDebugProfile serves.
func ProfileKinds() []string { return []string{"cpu", "heap", "allocs", "goroutine"} }

// How long a CPU profile runs.
const (
	DefaultProfileSeconds = 10
	MaxProfileSeconds     = 60
)

// PathCNIEndpoints is where the CNI plugin announces a pod's new interface
// (POST CNIEndpoint, answered with CNIEndpointResult). Served only on the
// agent's root-only socket.
const PathCNIEndpoints = "/v1/cni/endpoints"

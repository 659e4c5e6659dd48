// Package policy resolves network policies into one endpoint's datapath
// rules: (policies, identities, endpoint) → which remote identities may reach
// it, or be reached from it, on which protocols and ports, with which
// verdict. It is pure (no I/O, no clocks) and knows no Kubernetes types: the
// converters in mesh/policy/convert turn MembraneNetworkPolicy,
// MembraneClusterwideNetworkPolicy and networking.k8s.io/v1 NetworkPolicy
// into the plain Policy below, and the agent adapts Result to the tc
// datapath (bpf/policy).
//
// Semantics are Cilium's (see Rule and Resolve for the details).
package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/membrane-mesh/membrane/mesh/model"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Policy is one policy object: a set of rules OR-ed with every other rule.
type Policy struct {
	// Kind names the source, e.g. "NetworkPolicy"; it appears in origins
	// and problems only.
	Kind string `json:"kind,omitempty"`
	// Namespace is the policy's namespace; "" is a clusterwide policy.
	// Selectors of a namespaced policy are scoped to it (see Rule).
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Rules     []Rule `json:"rules"`
}

func (p Policy) String() string {
	s := p.Name
	if p.Namespace != "" {
		s = p.Namespace + "/" + s
	}
	if p.Kind != "" {
		s = p.Kind + " " + s
	}
	return s
}

// Rule selects endpoints and says which traffic they may send and receive.
//
// An endpoint selected by a rule with at least one Ingress or IngressDeny
// entry (even one with no peers) is enforced at ingress: only what some rule
// allows gets in. The same for egress. A namespaced policy's rules select
// endpoints of its namespace only. Peer selectors of a namespaced policy
// select endpoints of its namespace unless they name the namespace label
// (io.kubernetes.pod.namespace, any source prefix) or a namespace-labels key
// (io.cilium.k8s.namespace.labels.…); those of a clusterwide policy select
// endpoints of every namespace (but only endpoints: they require the
// namespace label to exist unless they name it). This is Cilium's scoping.
type Rule struct {
	EndpointSelector Selector   `json:"endpointSelector"`
	Ingress          []PeerRule `json:"ingress,omitempty"`
	IngressDeny      []PeerRule `json:"ingressDeny,omitempty"`
	Egress           []PeerRule `json:"egress,omitempty"`
	EgressDeny       []PeerRule `json:"egressDeny,omitempty"`
}

// PeerRule allows (or, in a deny list, denies) traffic between the selected
// endpoint and its peers on its ports.
//
// The peers are the union of Endpoints, Entities, CIDRs and FQDNs; a rule
// with none matches no peer (Cilium's implicit "every peer" for a rule with
// only toPorts is made explicit by the converters as Entities [all]).
// ToPorts empty means every protocol and port; otherwise the union of its
// entries.
type PeerRule struct {
	Endpoints []Selector `json:"endpoints,omitempty"`
	Entities  []Entity   `json:"entities,omitempty"`
	CIDRs     []CIDRRule `json:"cidrs,omitempty"`
	FQDNs     []FQDN     `json:"fqdns,omitempty"`
	ToPorts   []PortRule `json:"toPorts,omitempty"`
	// AuthRequired flags the allowed flows for mutual authentication.
	// Ignored in deny lists.
	AuthRequired bool `json:"authRequired,omitempty"`
	// AuthAlwaysFail (with AuthRequired): authentication never succeeds
	// (mode test-always-fail), so the flows are dropped.
	AuthAlwaysFail bool `json:"authAlwaysFail,omitempty"`
}

// Entity is a class of peers known without labels or addresses.
type Entity string

// Entities (Cilium's names).
const (
	EntityAll           Entity = "all"            // every peer: identity 0
	EntityWorld         Entity = "world"          // outside the cluster: world and every CIDR identity
	EntityCluster       Entity = "cluster"        // every endpoint identity and the reserved in-cluster ones
	EntityHost          Entity = "host"           // the local node
	EntityRemoteNode    Entity = "remote-node"    // the other nodes
	EntityKubeAPIServer Entity = "kube-apiserver" // the API server's addresses
	EntityHealth        Entity = "health"
	EntityInit          Entity = "init"
	EntityUnmanaged     Entity = "unmanaged"
	EntityIngress       Entity = "ingress" // the node Envoys' Gateway and Ingress traffic
)

// CIDRRule matches addresses of CIDR except those of Except.
type CIDRRule struct {
	CIDR   netip.Prefix   `json:"cidr"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// FQDN matches peers, or DNS questions, by DNS name: MatchName exactly,
// MatchPattern with Cilium's wildcards (mesh/fqdn/matchpattern).
type FQDN struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}

// PortRule is a set of ports with optional L7 rules. An entry with no Ports
// matches nothing (as in Cilium).
type PortRule struct {
	Ports []Port `json:"ports,omitempty"`
	// HTTP rules send the flows through the L7 proxy (verdict Redirect),
	// which lets a request pass when it matches one of them.
	HTTP []HTTPRule `json:"http,omitempty"`
	// DNS rules send the flows through the DNS proxy (verdict Redirect),
	// which lets a question pass when one of them matches its name.
	DNS []FQDN `json:"dns,omitempty"`
}

// Port is a port, port range or port name with a protocol.
type Port struct {
	// Port 0 (with no Name) is every port of Proto.
	Port uint16 `json:"port,omitempty"`
	// EndPort above Port makes the range Port..EndPort.
	EndPort uint16 `json:"endPort,omitempty"`
	// Name is a container port name, instead of Port: the selected
	// endpoint's for ingress, the peers' for egress. Case-insensitive.
	Name  string `json:"name,omitempty"`
	Proto Proto  `json:"protocol,omitempty"`
}

// HTTPRule matches HTTP requests: every field given must match; the empty
// rule matches every request. Method, Path and Host are RE2 regular
// expressions matched against the whole value.
type HTTPRule struct {
	Method  string        `json:"method,omitempty"`
	Path    string        `json:"path,omitempty"`
	Host    string        `json:"host,omitempty"`
	Headers []HeaderMatch `json:"headers,omitempty"`
}

// HeaderMatch requires a header (with exactly Value, if not empty). With a
// Mismatch action (LOG, ADD, DELETE, REPLACE) a mismatch does not deny.
type HeaderMatch struct {
	Name     string `json:"name"`
	Value    string `json:"value,omitempty"`
	Mismatch string `json:"mismatch,omitempty"`
}

// Endpoint is the local endpoint whose policy is resolved.
type Endpoint struct {
	Identity identity.ID `json:"identity"`
	// Labels are its security labels ("k8s:app", …), as identity.ForPod
	// makes them; the namespace label is taken from Namespace if missing.
	Labels    identity.Labels `json:"labels"`
	Namespace string          `json:"namespace,omitempty"`
	// NamedPorts are the pod's container ports by name (lower case).
	NamedPorts map[string]NamedPort `json:"namedPorts,omitempty"`
}

// NamedPort is a container port.
type NamedPort struct {
	Port  uint16 `json:"port"`
	Proto Proto  `json:"protocol"`
}

// Identity is a known security identity of the cluster's endpoints.
type Identity struct {
	ID     identity.ID     `json:"id"`
	Labels identity.Labels `json:"labels"`
	// NamedPorts are the container ports by name of the pods with this
	// identity (all their numbers, if they differ), for egress rules with
	// named ports.
	NamedPorts map[string][]NamedPort `json:"namedPorts,omitempty"`
}

// IdentitySet is what selectors are resolved against.
type IdentitySet struct {
	// Identities are the endpoint identities (MembraneIdentity objects).
	// Reserved identities are not listed: entities select them.
	Identities []Identity `json:"identities,omitempty"`
	// CIDRs is the previous CIDR identity allocation (Result.CIDRIdentities
	// or Resolver.CIDRIdentities): prefixes still in use keep their number.
	// Optional; the allocation is deterministic without it.
	CIDRs []CIDRIdentity `json:"cidrs,omitempty"`
	// Names are what the DNS proxy learned: toFQDNs selectors match the
	// addresses of the names they select.
	Names []LearnedName `json:"names,omitempty"`
	// FQDNSince is when each policy's toFQDNs selector (by SinceKey)
	// appeared on the node: it admits only names learned since (see
	// LearnedName).
	FQDNSince map[string]time.Time `json:"fqdnSince,omitempty"`
}

// Config is the node's configuration of the resolver.
type Config struct {
	// ProxyPort is the L7 proxy's port, the ProxyPort of Redirect rules.
	// Without it, rules with HTTP rules are skipped (and reported).
	ProxyPort uint16 `json:"proxyPort,omitempty"`
	// DNSProxyPort is the DNS proxy's port, the ProxyPort of Redirect
	// rules with DNS rules. Without it, DNS rules are reported and their
	// ports allowed for every name.
	DNSProxyPort uint16 `json:"dnsProxyPort,omitempty"`
	// EnforceHostIngress subjects traffic from the local node (identity
	// host) to policy like any peer. By default (false, Cilium's
	// allow-localhost) an endpoint enforcing ingress still accepts it, so
	// kubelet probes pass; deny rules still win.
	EnforceHostIngress bool `json:"enforceHostIngress,omitempty"`
	// MutualAuth says the node authenticates connections with mutual TLS
	// (the SVIDs and the proxy are there). Without it, rules requiring
	// authentication are reported: what they allow is dropped.
	MutualAuth bool `json:"mutualAuth,omitempty"`
}

// Local CIDR identities: Cilium's range of node-local identities.
const (
	MinCIDRIdentity identity.ID = 1 << 24
	MaxCIDRIdentity identity.ID = 1<<25 - 1
)

// CIDRIdentity is an identity for a prefix: the agent puts it into the
// ipcache (prefix → ID).
type CIDRIdentity struct {
	Prefix netip.Prefix `json:"prefix"`
	ID     identity.ID  `json:"id"`
}

// Result is an endpoint's resolved policy.
type Result struct {
	// EnforceIngress/EnforceEgress: in that direction only what Rules
	// allow passes. Otherwise Rules has no entries for it.
	EnforceIngress bool `json:"enforceIngress"`
	EnforceEgress  bool `json:"enforceEgress"`
	// Rules are the datapath entries, one per key, sorted.
	Rules []DatapathRule `json:"rules,omitempty"`
	// CIDRIdentities are the node's CIDR identities: every prefix of every
	// policy given to the resolver (identical in every Result of one
	// Resolver), so the ipcache's longest-prefix match resolves addresses
	// to the identities rules refer to. Sorted by prefix.
	CIDRIdentities []CIDRIdentity `json:"cidrIdentities,omitempty"`
	// L7 are the rules the L7 proxy enforces on redirected flows.
	L7 []L7Rule `json:"l7,omitempty"`
	// DNS are the rules the DNS proxy enforces on redirected flows.
	DNS []DNSRule `json:"dns,omitempty"`
	// FQDNSelectors are the toFQDNs selectors of the egress rules selecting
	// the endpoint: the DNS proxy learns the answers to its questions for
	// names they match. Sorted.
	FQDNSelectors []FQDN `json:"fqdnSelectors,omitempty"`
	// Problems are parts of policies that could not be applied to this
	// endpoint; the rest is applied.
	Problems []error `json:"-"`
}

// DatapathRule is one entry of the endpoint's policy map (bpf/policy.Rule
// without the endpoint ID).
type DatapathRule struct {
	Direction Direction `json:"direction"`
	// RemoteIdentity 0 matches every peer.
	RemoteIdentity identity.ID `json:"remoteIdentity"`
	// Proto Any with Port 0 is L3 only (every protocol); Any with a port
	// means TCP, UDP and SCTP.
	Proto Proto `json:"proto"`
	// Port 0 is every port; EndPort above Port makes a range.
	Port         uint16  `json:"port,omitempty"`
	EndPort      uint16  `json:"endPort,omitempty"`
	Verdict      Verdict `json:"verdict"`
	ProxyPort    uint16  `json:"proxyPort,omitempty"`
	AuthRequired bool    `json:"authRequired,omitempty"`
	// AuthAlwaysFail: some rule's authentication never succeeds; the
	// entry is never authenticated (its flows are dropped).
	AuthAlwaysFail bool `json:"authAlwaysFail,omitempty"`
	// Origins name the rules the entry comes from, for policy get/trace.
	Origins []string `json:"origins,omitempty"`
}

func (r DatapathRule) String() string {
	s := fmt.Sprintf("%s %s %s", r.Direction, RemoteString(r.RemoteIdentity), r.Proto)
	if r.Port != 0 {
		s += "/" + strconv.Itoa(int(r.Port))
		if r.EndPort > r.Port {
			s += "-" + strconv.Itoa(int(r.EndPort))
		}
	}
	s += " " + r.Verdict.String()
	if r.Verdict == Redirect {
		s += ":" + strconv.Itoa(int(r.ProxyPort))
	}
	if r.AuthRequired {
		s += "+auth"
	}
	return s
}

// RemoteString names a rule's remote identity: "any" for 0,
// "reserved:<name>" for a reserved one, else its number.
func RemoteString(id identity.ID) string {
	if id == 0 {
		return "any"
	}
	if n := identity.Reserved(id); n != "" {
		return "reserved:" + n
	}
	return strconv.FormatUint(uint64(id), 10)
}

// L7Rule lets requests on a redirected port pass: from one of
// RemoteIdentities (0: every peer), matching one of HTTP.
type L7Rule struct {
	Direction        Direction     `json:"direction"`
	Proto            Proto         `json:"proto"`
	Port             uint16        `json:"port"`
	EndPort          uint16        `json:"endPort,omitempty"`
	RemoteIdentities []identity.ID `json:"remoteIdentities"`
	HTTP             []HTTPRule    `json:"http"`
	Origins          []string      `json:"origins,omitempty"`
}

// The resolver speaks mesh/model's traffic vocabulary; these are its names
// for model's types and values, not types of their own.
type (
	Direction = model.Direction
	Proto     = model.Protocol
	Verdict   = model.Verdict
)

// Directions, protocols and verdicts (mesh/model's).
const (
	Ingress = model.Ingress // traffic to the endpoint
	Egress  = model.Egress  // traffic from the endpoint

	Any  = model.AnyProtocol
	ICMP = model.ICMP
	TCP  = model.TCP
	UDP  = model.UDP
	SCTP = model.SCTP

	Allow    = model.Allow
	Deny     = model.Deny
	Redirect = model.Redirect // allow through the L7 proxy
)

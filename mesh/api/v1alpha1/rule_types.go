package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The types below mirror CiliumNetworkPolicy's rule (cilium.io/v2, package
// github.com/cilium/cilium/pkg/policy/api) field for field, for the fields
// Membrane supports. Fields Cilium has and Membrane does not (fromRequires,
// toServices, toGroups, icmps, nodeSelector, enableDefaultDeny, labels, L7
// kafka and generic l7, TLS contexts, …) are unknown fields here: the API
// server rejects them (kubectl's default --validate=strict) instead of
// silently ignoring part of a policy.

// Rule selects endpoints and says which traffic they may send and receive.
//
// Default deny, as in Cilium: an endpoint selected by a rule that has an
// ingress or ingressDeny section (at least one entry, even an empty {}) drops
// every ingress connection no rule allows; the same for egress. An empty or
// omitted section leaves that direction alone.
type Rule struct {
	// EndpointSelector selects the endpoints the rule applies to. An empty
	// selector ({}) selects every endpoint (of the policy's namespace, for a
	// namespaced policy). Keys may carry Cilium's source prefix "k8s:" or
	// "any:".
	// +kubebuilder:validation:Required
	EndpointSelector *metav1.LabelSelector `json:"endpointSelector,omitempty"`

	// Ingress rules allow traffic to the selected endpoints.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Ingress []IngressRule `json:"ingress,omitempty"`

	// IngressDeny rules drop traffic to the selected endpoints, whatever the
	// ingress rules allow.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	IngressDeny []IngressDenyRule `json:"ingressDeny,omitempty"`

	// Egress rules allow traffic from the selected endpoints.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Egress []EgressRule `json:"egress,omitempty"`

	// EgressDeny rules drop traffic from the selected endpoints, whatever the
	// egress rules allow.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	EgressDeny []EgressDenyRule `json:"egressDeny,omitempty"`

	// Description is free text for humans.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Description string `json:"description,omitempty"`
}

// IngressCommonRule is the peer part of ingress and ingressDeny rules. The
// peers a rule matches are the union of its from* fields. A rule with none of
// them matches every peer if it has toPorts (an L4-only rule), and no peer
// otherwise (e.g. the empty rule {}).
type IngressCommonRule struct {
	// FromEndpoints matches peers by label. An empty selector ({}) matches
	// every endpoint (of the policy's namespace, for a namespaced policy).
	// +optional
	// +kubebuilder:validation:MaxItems=64
	FromEndpoints []metav1.LabelSelector `json:"fromEndpoints,omitempty"`

	// FromEntities matches peers by entity.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	FromEntities []Entity `json:"fromEntities,omitempty"`

	// FromCIDR matches peers by address.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	FromCIDR []CIDR `json:"fromCIDR,omitempty"`

	// FromCIDRSet matches peers by address, with exceptions.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	FromCIDRSet []CIDRRule `json:"fromCIDRSet,omitempty"`
}

// IngressRule allows traffic from its peers to the selected endpoints, on
// toPorts (every port when empty).
type IngressRule struct {
	IngressCommonRule `json:",inline"`

	// ToPorts restricts the rule to these ports of the selected endpoints,
	// with optional L7 rules.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ToPorts []PortRule `json:"toPorts,omitempty"`

	// Authentication asks for mutual authentication of the peers, which is
	// not available yet (see Authentication.Mode).
	// +optional
	Authentication *Authentication `json:"authentication,omitempty"`
}

// IngressDenyRule drops traffic from its peers to the selected endpoints, on
// toPorts (every port when empty).
type IngressDenyRule struct {
	IngressCommonRule `json:",inline"`

	// ToPorts restricts the rule to these ports of the selected endpoints.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ToPorts []PortDenyRule `json:"toPorts,omitempty"`
}

// EgressCommonRule is the peer part of egress and egressDeny rules. The peers
// a rule matches are the union of its to* fields (and toFQDNs). A rule with
// none of them matches every peer if it has toPorts (an L4-only rule), and no
// peer otherwise (e.g. the empty rule {}).
type EgressCommonRule struct {
	// ToEndpoints matches peers by label. An empty selector ({}) matches
	// every endpoint (of the policy's namespace, for a namespaced policy).
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ToEndpoints []metav1.LabelSelector `json:"toEndpoints,omitempty"`

	// ToEntities matches peers by entity.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ToEntities []Entity `json:"toEntities,omitempty"`

	// ToCIDR matches peers by address.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	ToCIDR []CIDR `json:"toCIDR,omitempty"`

	// ToCIDRSet matches peers by address, with exceptions.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	ToCIDRSet []CIDRRule `json:"toCIDRSet,omitempty"`
}

// EgressRule allows traffic from the selected endpoints to its peers, on
// toPorts (every port when empty).
type EgressRule struct {
	EgressCommonRule `json:",inline"`

	// ToPorts restricts the rule to these ports of the peers, with optional
	// L7 rules.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ToPorts []PortRule `json:"toPorts,omitempty"`

	// ToFQDNs matches peers by the DNS names the selected endpoints looked up
	// (which needs a DNS rule that lets the proxy see the lookups). Not
	// available yet: toFQDNs match no peer, and the policy's Programmed
	// condition is False with reason Unsupported.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ToFQDNs []FQDNSelector `json:"toFQDNs,omitempty"`

	// Authentication asks for mutual authentication of the peers, which is
	// not available yet (see Authentication.Mode).
	// +optional
	Authentication *Authentication `json:"authentication,omitempty"`
}

// EgressDenyRule drops traffic from the selected endpoints to its peers, on
// toPorts (every port when empty).
type EgressDenyRule struct {
	EgressCommonRule `json:",inline"`

	// ToPorts restricts the rule to these ports of the peers.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ToPorts []PortDenyRule `json:"toPorts,omitempty"`
}

// Entity is a class of peers known without their labels or addresses.
//
// +kubebuilder:validation:Enum=all;world;cluster;host;remote-node;kube-apiserver;health;init;unmanaged;ingress
type Entity string

// Entities.
const (
	EntityAll           Entity = "all"            // every peer
	EntityWorld         Entity = "world"          // outside the cluster
	EntityCluster       Entity = "cluster"        // inside the cluster: endpoints, nodes, …
	EntityHost          Entity = "host"           // the local node
	EntityRemoteNode    Entity = "remote-node"    // the other nodes
	EntityKubeAPIServer Entity = "kube-apiserver" // the API server's addresses
	EntityHealth        Entity = "health"         // the agents' health endpoints
	EntityInit          Entity = "init"           // endpoints whose identity is not resolved yet
	EntityUnmanaged     Entity = "unmanaged"      // pods not managed by Membrane (host network, …)
	EntityIngress       Entity = "ingress"        // the node Envoys' Gateway and Ingress traffic to backends
)

// CIDR is an IPv4 or IPv6 prefix in CIDR notation, e.g. 192.0.2.0/24.
//
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:Format=cidr
type CIDR string

// CIDRRule matches the addresses of a CIDR except those of its exceptions.
type CIDRRule struct {
	// CIDR is the prefix matched.
	CIDR CIDR `json:"cidr"`

	// ExceptCIDRs are prefixes within cidr that are not matched.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ExceptCIDRs []CIDR `json:"except,omitempty"`
}

// PortRule is a set of ports with optional L7 rules for them.
type PortRule struct {
	// Ports are L4 ports and protocols.
	// +optional
	// +kubebuilder:validation:MaxItems=40
	Ports []PortProtocol `json:"ports,omitempty"`

	// Rules are L7 rules, enforced by the node's proxy. Traffic on the ports
	// must then match one of them.
	// +optional
	Rules *L7Rules `json:"rules,omitempty"`
}

// PortDenyRule is a set of ports, for deny rules (no L7 rules).
type PortDenyRule struct {
	// Ports are L4 ports and protocols.
	// +optional
	// +kubebuilder:validation:MaxItems=40
	Ports []PortProtocol `json:"ports,omitempty"`
}

// PortProtocol is an L4 port, or port range, with a protocol.
//
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort == 0 || (self.port.matches('^[0-9]+$') && int(self.port) <= self.endPort)",message="endPort needs a numeric port and must be greater than or equal to it",fieldPath=".endPort"
type PortProtocol struct {
	// Port is a port number (0 to 65535; 0 means every port) or the name of a
	// container port (an IANA service name such as "http", matched without
	// regard to case).
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}|(?:[a-zA-Z0-9]-?)*[a-zA-Z](?:-?[a-zA-Z0-9])*)$`
	Port string `json:"port"`

	// EndPort makes the port a range, port to endPort inclusive. It needs a
	// numeric port.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	EndPort int32 `json:"endPort,omitempty"`

	// Protocol is TCP, UDP, SCTP or ANY; omitted means ANY.
	// +optional
	Protocol L4Proto `json:"protocol,omitempty"`
}

// L4Proto is an L4 protocol name.
//
// +kubebuilder:validation:Enum=TCP;UDP;SCTP;ANY
type L4Proto string

// L4 protocols.
const (
	ProtoTCP  L4Proto = "TCP"
	ProtoUDP  L4Proto = "UDP"
	ProtoSCTP L4Proto = "SCTP"
	ProtoAny  L4Proto = "ANY"
)

// L7Rules are the L7 rules of a port rule: HTTP or DNS, not both.
//
// +kubebuilder:validation:XValidation:rule="!has(self.http) || !has(self.dns)",message="http and dns rules cannot be combined in one port rule"
type L7Rules struct {
	// HTTP rules: a request is allowed when it matches one of them.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	HTTP []PortRuleHTTP `json:"http,omitempty"`

	// DNS rules: a lookup is allowed when it matches one of them (egress
	// only). Not enforced yet: the ports are allowed for every name, and
	// unless a rule is matchPattern "*" the policy's Programmed condition is
	// False with reason Unsupported.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	DNS []FQDNSelector `json:"dns,omitempty"`
}

// PortRuleHTTP matches HTTP requests; every field given must match, an empty
// rule matches every request. Method, path and host are regular expressions
// (RE2 syntax), matched against the whole value.
type PortRuleHTTP struct {
	// Method is a regular expression for the request method, e.g. "GET|HEAD".
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Method string `json:"method,omitempty"`

	// Path is a regular expression for the request path, e.g. "/api/v1/.*".
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Path string `json:"path,omitempty"`

	// Host is a regular expression for the request's host (authority).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Host string `json:"host,omitempty"`

	// Headers must be present: "Name" requires the header, "Name: value"
	// requires it with exactly that value.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=1024
	Headers []string `json:"headers,omitempty"`

	// HeaderMatches match header values, with an action on mismatch.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	HeaderMatches []HeaderMatch `json:"headerMatches,omitempty"`
}

// HeaderMatch requires a header value. Without mismatch, a request whose
// header does not match is denied; with it, the request is allowed (logging
// the mismatch or fixing the header is not implemented yet: the policy's
// Programmed condition is then False with reason Unsupported).
type HeaderMatch struct {
	// Mismatch is what to do when the header does not match.
	// +optional
	Mismatch MismatchAction `json:"mismatch,omitempty"`

	// Name is the header's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`

	// Value is the exact value required; empty requires only presence.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value,omitempty"`
}

// MismatchAction is what the proxy does with a request whose header does not
// match.
//
// +kubebuilder:validation:Enum=LOG;ADD;DELETE;REPLACE
type MismatchAction string

// Mismatch actions.
const (
	MismatchLog     MismatchAction = "LOG"     // allow, log the mismatch
	MismatchAdd     MismatchAction = "ADD"     // allow, add the value to the header
	MismatchDelete  MismatchAction = "DELETE"  // allow, remove the header
	MismatchReplace MismatchAction = "REPLACE" // allow, set the header to the value
)

// FQDNSelector matches DNS names: exactly one of matchName and matchPattern.
//
// +kubebuilder:validation:XValidation:rule="has(self.matchName) != has(self.matchPattern)",message="exactly one of matchName and matchPattern must be set"
type FQDNSelector struct {
	// MatchName matches one DNS name exactly (case-insensitive; a trailing
	// dot is implied).
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^([-a-zA-Z0-9_]+[.]?)+$`
	MatchName string `json:"matchName,omitempty"`

	// MatchPattern matches DNS names with wildcards (case-insensitive; a
	// trailing dot is implied): "*" matches any run of DNS characters
	// within a label, so a leading "*." matches subdomains of one level
	// ("*.example.com" matches "a.example.com", not "example.com"); a
	// leading "**." matches subdomains of any depth; "*" alone matches
	// every name. "**" elsewhere is refused.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^([-a-zA-Z0-9_*]+[.]?)+$`
	MatchPattern string `json:"matchPattern,omitempty"`
}

// Authentication is the authentication a rule requires of its peers.
type Authentication struct {
	// Mode is "disabled" (none), "required" or "test-always-fail" (for
	// tests: authentication never succeeds). With "required" on an ingress
	// rule, the traffic the rule allows travels between the node proxies in
	// mutual TLS with the two workloads' SPIFFE identities (HTTP rules of
	// the same ports are applied inside it); everything else to those ports
	// is dropped (drop reason "Authentication required"). Where the cluster
	// has no SPIFFE identities, and on egress rules, "required" drops the
	// traffic the rule matches, and the policy's Programmed condition is
	// False with reason Unsupported.
	Mode AuthenticationMode `json:"mode"`
}

// AuthenticationMode is the authentication a rule requires.
//
// +kubebuilder:validation:Enum=disabled;required;test-always-fail
type AuthenticationMode string

// Authentication modes.
const (
	AuthenticationDisabled   AuthenticationMode = "disabled"
	AuthenticationRequired   AuthenticationMode = "required"
	AuthenticationAlwaysFail AuthenticationMode = "test-always-fail"
)

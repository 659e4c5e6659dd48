package agent

import (
	"net/netip"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"

	"github.com/membrane-mesh/membrane/bpf/socklb"
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
	Node string      `json:"node"`
	Dump socklb.Dump `json:"dump"`
}

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
	// State is ready, waiting-for-identity, waiting-for-interface or error.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// PolicyEntry is the answer of PathEndpointPolicy: the policy resolved for
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
	Node string         `json:"node"`
	Dump bpfpolicy.Dump `json:"dump"`
}

// Package flow is Membrane's flow observability: the Flow model (what one
// packet or L7 request did, with both endpoints resolved), a bounded
// in-memory store of recent flows with follow subscriptions, Hubble-style
// filters, Prometheus metrics, and the observe API (GET /v1/flows,
// newline-delimited JSON) the node agent serves and `membrane observe`
// reads through the API server's node proxy.
//
// The agent's part (mesh/flow/bpfevent converts the policy datapath's
// events; this package links no datapath code):
//
//	store := flow.NewStore(flow.DefaultCapacity, flow.NewMetrics(reg))
//	go events.Run(ctx, func(ev policy.FlowEvent) { store.Add(bpfevent.Flow(ev, node, enricher)) })
//	// and, for each request the L7 proxy logged (converted to an HTTPLog):
//	store.Add(flow.FromHTTPLog(l, node, enricher))
//	mux.Handle("GET "+flow.Path, flow.NewHandler(log, store))
//
// A client's part:
//
//	body, err := ... GET flow.Path + "?" + req.Values().Encode() ...
//	err = flow.Stream(ctx, body, func(f flow.Flow) error { ... })
package flow

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/membrane-mesh/membrane/mesh/model"
)

// Flow is one observed packet (trace or drop) or L7 request/response. It is
// a plain value, JSON-friendly; flows handed to a Store must not be modified
// afterwards (readers share them).
type Flow struct {
	Time time.Time `json:"time"`
	// Node is the node whose agent observed the flow.
	Node string `json:"node,omitempty"`
	Type Type   `json:"type"`
	// TracePoint says where a trace was observed, in Hubble's words:
	// "to-endpoint" (delivered to the pod), "to-stack" (left the pod),
	// "to-proxy" (handed to the L7 proxy).
	TracePoint string  `json:"tracePoint,omitempty"`
	Verdict    Verdict `json:"verdict"`
	// DropReason is set for dropped flows.
	DropReason *DropReason `json:"dropReason,omitempty"`
	// Direction is relative to the local endpoint the datapath saw the
	// packet on: ingress is traffic to it, egress from it.
	Direction Direction `json:"direction,omitempty"`
	// IsReply marks packets going the opposite way of the connection's
	// opening packet.
	IsReply bool `json:"isReply,omitempty"`
	// CTState is conntrack's view: new, established, reply, related.
	CTState string `json:"ctState,omitempty"`
	// PolicyMatch is how specific the policy entry deciding a new flow was
	// (Cilium's match types: L3-Only, L3-L4, L4-Only, all, ...).
	PolicyMatch string `json:"policyMatch,omitempty"`
	// ProxyPort is the L7 proxy port of a redirected flow.
	ProxyPort uint16 `json:"proxyPort,omitempty"`
	// Bytes is the length of the packet.
	Bytes uint32 `json:"bytes,omitempty"`

	IP          IP       `json:"ip"`
	L4          L4       `json:"l4"`
	Source      Endpoint `json:"source"`
	Destination Endpoint `json:"destination"`
	L7          *L7      `json:"l7,omitempty"`
	// Auth names both ends of a connection the node proxies authenticated
	// with mutual TLS.
	Auth *Auth `json:"auth,omitempty"`
}

// Type is the kind of a flow.
type Type string

// Flow types.
const (
	TypeTrace Type = "trace" // a forwarded (or redirected) packet
	TypeDrop  Type = "drop"  // a dropped packet
	TypeL7    Type = "l7"    // an L7 request or response (from the proxy)
)

// Types lists the flow types, for help texts and validation.
var Types = []Type{TypeTrace, TypeDrop, TypeL7}

// Verdict is what happened to a flow; the names are Hubble's.
type Verdict string

// Verdicts. The policy datapath emits FORWARDED, DROPPED and REDIRECTED;
// the others are Hubble's, accepted by filters for compatibility.
const (
	Forwarded  Verdict = "FORWARDED"
	Dropped    Verdict = "DROPPED"
	Error      Verdict = "ERROR"
	Audit      Verdict = "AUDIT"
	Redirected Verdict = "REDIRECTED"
	Traced     Verdict = "TRACED"
	Translated Verdict = "TRANSLATED"
)

// Verdicts lists the verdicts, for help texts and validation.
var Verdicts = []Verdict{Forwarded, Dropped, Error, Audit, Redirected, Traced, Translated}

// DropReason says why a flow was dropped: Cilium's numeric code, Hubble's
// enum name and Cilium's description.
type DropReason struct {
	Code uint8 `json:"code"`
	// Name is Hubble's flow.DropReason name, e.g. "POLICY_DENIED".
	Name string `json:"name"`
	// Description is Cilium's text, e.g. "Policy denied", "Policy denied
	// by denylist", "Authentication required".
	Description string `json:"description"`
}

// L7PolicyDenied is the drop reason of an HTTP request the L7 policy (the
// proxy's RBAC filter) refused with a 403. Cilium has no drop code of its
// own for L7 denials, so it takes Policy denied's code and Hubble name
// (133, POLICY_DENIED) with a description that tells it from an L3/L4 drop.
func L7PolicyDenied() *DropReason {
	return &DropReason{Code: 133, Name: "POLICY_DENIED", Description: "L7 policy denied"}
}

// Direction is relative to the local endpoint.
type Direction string

// Directions.
const (
	Ingress Direction = "ingress"
	Egress  Direction = "egress"
)

// IP is the flow's layer 3.
type IP struct {
	Source      netip.Addr `json:"source"`
	Destination netip.Addr `json:"destination"`
}

// Protocol is an L4 protocol name.
type Protocol string

// Protocols by name; others are "proto-<number>".
const (
	TCP    Protocol = "TCP"
	UDP    Protocol = "UDP"
	SCTP   Protocol = "SCTP"
	ICMPv4 Protocol = "ICMPv4"
	ICMPv6 Protocol = "ICMPv6"
)

// L4 is the flow's layer 4. Ports are set for TCP, UDP and SCTP; ICMP
// type and code for ICMP.
type L4 struct {
	Protocol        Protocol       `json:"protocol"`
	SourcePort      uint16         `json:"sourcePort,omitempty"`
	DestinationPort uint16         `json:"destinationPort,omitempty"`
	TCPFlags        model.TCPFlags `json:"tcpFlags,omitzero"`
	ICMPType        uint8          `json:"icmpType,omitempty"`
	ICMPCode        uint8          `json:"icmpCode,omitempty"`
}

// Endpoint is one side of a flow: a pod (namespace, name, labels), or a
// reserved entity (world, host, remote-node, ...), with its security
// identity.
type Endpoint struct {
	// ID is the local endpoint ID (set for the side the datapath saw the
	// packet on), as Hubble's Endpoint.ID.
	ID       uint16 `json:"id,omitempty"`
	Identity uint32 `json:"identity"`
	// Entity names a reserved identity: "world", "host", "remote-node",
	// "kube-apiserver", ...
	Entity    string `json:"entity,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	PodName   string `json:"podName,omitempty"`
	// Labels are the security labels, "source:key=value" (e.g.
	// "k8s:app=frontend", "reserved:world"), sorted.
	Labels []string `json:"labels,omitempty"`
	// Cluster is the remote cluster of a pod of a connected cluster
	// (cluster mesh); empty for this cluster's endpoints.
	Cluster string `json:"cluster,omitempty"`
}

// L7Type says whether an L7 flow is a request or a response.
type L7Type string

// L7 flow types, Hubble's. A flow made from the proxy's access log
// (FromHTTPLog) is one completed request, request and response together:
// it is an L7Response, as it carries the status code and the latency.
const (
	L7Request  L7Type = "request"
	L7Response L7Type = "response"
)

// L7 are the fields the L7 proxy reports.
type L7 struct {
	Type L7Type `json:"type"`
	// Latency is the time between request and response (responses only).
	Latency time.Duration `json:"latencyNs,omitempty"`
	HTTP    *HTTP         `json:"http,omitempty"`
	DNS     *DNS          `json:"dns,omitempty"`
}

// DNS is a DNS question and what became of it (Hubble's flow.DNS).
type DNS struct {
	// Query is the name asked, with the trailing dot.
	Query string `json:"query"`
	// QTypes are the question's types, e.g. "A".
	QTypes []string `json:"qtypes,omitempty"`
	// RCode is the response code the client got, e.g. "NOERROR",
	// "REFUSED"; "NONE" when it got no response.
	RCode string `json:"rcode"`
	// IPs are the addresses of the answer.
	IPs []netip.Addr `json:"ips,omitempty"`
	// TTL is the answer's smallest TTL in seconds.
	TTL uint32 `json:"ttl,omitempty"`
	// ObservationSource is who saw it: "proxy" (the node's DNS proxy).
	ObservationSource string `json:"observationSource,omitempty"`
}

// Auth is a mutually authenticated connection's two SPIFFE IDs: the
// client's certificate's and the server's.
type Auth struct {
	SourceID      string `json:"sourceSpiffeID"`
	DestinationID string `json:"destinationSpiffeID"`
}

// HTTP is an HTTP request or response.
type HTTP struct {
	Protocol string `json:"protocol,omitempty"` // e.g. "HTTP/1.1"
	Method   string `json:"method,omitempty"`
	Host     string `json:"host,omitempty"`
	Path     string `json:"path,omitempty"`
	Code     int    `json:"code,omitempty"` // responses only
}

// SortedLabels turns security labels keyed "source:key" (mesh/identity's
// Labels) into Endpoint.Labels: "source:key=value", or "source:key" for
// an empty value, sorted.
func SortedLabels(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if v := m[k]; v != "" {
			out = append(out, k+"="+v)
		} else {
			out = append(out, k)
		}
	}
	return out
}

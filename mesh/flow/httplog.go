package flow

import (
	"net/netip"
	"time"
)

// HTTPLog is one completed HTTP request as the L7 proxy logs it: Envoy's
// access log has one record per request, request and response together.
// The agent fills it from the proxy's records; this package knows no proxy
// types.
type HTTPLog struct {
	// Time is when the proxy got the request's first byte (Envoy's
	// start_time).
	Time time.Time
	// Source is the client (downstream), Destination the server the
	// request was for (the original destination the datapath redirected).
	Source, Destination netip.AddrPort
	// Direction is the side of the proxy's listener: ingress to a local
	// pod, egress from one.
	Direction Direction
	Protocol  string // "HTTP/1.1", "HTTP/2"
	Method    string
	Host      string // the authority
	Path      string
	// Code is the response's status (0: none, e.g. the client went away).
	Code int
	// Duration is from the request's first byte to the response's last.
	Duration time.Duration
	// Denied: the L7 policy (the proxy's RBAC filter) refused the request.
	Denied bool
	// SourceID and DestinationID, when set, are the SPIFFE IDs of a
	// mutually authenticated tunnel's client and server: the request is
	// the tunnel's CONNECT for one connection to Destination, or (another
	// method) an HTTP request inside it that the destination's L7 rules
	// were applied to.
	SourceID, DestinationID string
}

// FromHTTPLog converts a request the L7 proxy on node completed into one
// Flow: TypeL7 with an L7Response (status code and latency), verdict
// FORWARDED, or DROPPED with L7PolicyDenied when the L7 policy refused it.
// Its time is when the response completed (Time + Duration), as a Hubble
// response flow's. enrich (may be nil) resolves the addresses to endpoints;
// the proxy reports no identities, so theirs are the enricher's.
func FromHTTPLog(l HTTPLog, node string, enrich Enricher) Flow {
	f := Flow{
		Time:      l.Time.Add(l.Duration),
		Node:      node,
		Type:      TypeL7,
		Verdict:   Forwarded,
		Direction: l.Direction,
		IP:        IP{Source: l.Source.Addr().Unmap(), Destination: l.Destination.Addr().Unmap()},
		L4:        L4{Protocol: TCP, SourcePort: l.Source.Port(), DestinationPort: l.Destination.Port()},
		L7: &L7{Type: L7Response, Latency: l.Duration, HTTP: &HTTP{
			Protocol: l.Protocol, Method: l.Method, Host: l.Host, Path: l.Path, Code: l.Code,
		}},
	}
	if l.Denied {
		f.Verdict, f.DropReason = Dropped, L7PolicyDenied()
	}
	if l.SourceID != "" || l.DestinationID != "" {
		f.Auth = &Auth{SourceID: l.SourceID, DestinationID: l.DestinationID}
	}
	f.Source = Resolve(enrich, f.IP.Source, 0)
	f.Destination = Resolve(enrich, f.IP.Destination, 0)
	return f
}

// DNSLog is one question the DNS proxy handled. The agent fills it from the
// proxy's answers; this package knows no proxy types.
type DNSLog struct {
	// Time is when the question arrived.
	Time time.Time
	// Source is the pod, Destination the server it asked.
	Source, Destination netip.AddrPort
	Protocol            Protocol // TCP or UDP
	Query               string
	QTypes              []string
	RCode               string
	IPs                 []netip.Addr
	TTL                 time.Duration
	// Verdict is Forwarded, Dropped (refused by policy) or Error; Reason
	// says why for the last two.
	Verdict  Verdict
	Reason   string
	Duration time.Duration
}

// DNSPolicyDenied is the drop reason of a DNS question the DNS rules
// refused: Policy denied's code and Hubble name, with Cilium's text.
func DNSPolicyDenied() *DropReason {
	return &DropReason{Code: 133, Name: "POLICY_DENIED", Description: "DNS query refused by policy"}
}

// FromDNSLog converts a question the DNS proxy on node handled into one
// egress Flow: TypeL7 with an L7Response carrying DNS, verdict FORWARDED,
// DROPPED with DNSPolicyDenied when the DNS rules refused it, or ERROR.
func FromDNSLog(l DNSLog, node string, enrich Enricher) Flow {
	f := Flow{
		Time:      l.Time.Add(l.Duration),
		Node:      node,
		Type:      TypeL7,
		Verdict:   l.Verdict,
		Direction: Egress,
		IP:        IP{Source: l.Source.Addr().Unmap(), Destination: l.Destination.Addr().Unmap()},
		L4:        L4{Protocol: l.Protocol, SourcePort: l.Source.Port(), DestinationPort: l.Destination.Port()},
		L7: &L7{Type: L7Response, Latency: l.Duration, DNS: &DNS{
			Query: l.Query, QTypes: l.QTypes, RCode: l.RCode, IPs: l.IPs,
			TTL: uint32(l.TTL / time.Second), ObservationSource: "proxy",
		}},
	}
	if l.Verdict == Dropped {
		f.DropReason = DNSPolicyDenied()
	}
	f.Source = Resolve(enrich, f.IP.Source, 0)
	f.Destination = Resolve(enrich, f.IP.Destination, 0)
	return f
}

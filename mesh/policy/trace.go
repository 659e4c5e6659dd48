package policy

import (
	"fmt"
	"strings"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Decision is what the datapath does with a new flow of an endpoint in one
// direction, by the precedence of bpf/README.md: deny wins (from a lookup
// with the peer's identity or with 0), then default deny, then
// authentication, then the most specific entry (longest protocol/port
// prefix; on a tie redirect beats allow, then the identity-specific entry).
type Decision struct {
	// Endpoint is the endpoint whose policy decides (set by Trace).
	Endpoint  identity.ID `json:"endpoint,omitempty"`
	Direction Direction   `json:"direction"`
	Remote    identity.ID `json:"remote"`
	Proto     Proto       `json:"proto"`
	Port      uint16      `json:"port"`
	Enforced  bool        `json:"enforced"`
	// Verdict is Allow, Deny or Redirect (allowed through the L7 proxy,
	// whose L7 rules then decide per request).
	Verdict Verdict `json:"verdict"`
	// AuthRequired: the flow is dropped until the peers are authenticated.
	AuthRequired bool `json:"authRequired,omitempty"`
	// Reason is the datapath's name for the outcome ("Policy denied", …).
	Reason string `json:"reason"`
	// Rule is the decisive entry; nil when not enforced or denied by
	// default.
	Rule *DatapathRule `json:"rule,omitempty"`
	// Matches are every entry the flow matches.
	Matches []DatapathRule `json:"matches,omitempty"`
	// L7 are the proxy's rules for the flow, when redirected.
	L7 []L7Rule `json:"l7,omitempty"`
}

// Reasons of decisions.
const (
	ReasonNotEnforced  = "policy not enforced"
	ReasonAllowed      = "allowed"
	ReasonRedirected   = "redirected to the L7 proxy"
	ReasonDenied       = "Policy denied"
	ReasonDenylist     = "Policy denied by denylist"
	ReasonAuthRequired = "Authentication required"
	// ReasonNotEndpoint: the flow's end is no pod of the cluster (an
	// address outside it, or a node's): no policy of Membrane's applies
	// on its side.
	ReasonNotEndpoint = "not a pod: no policy of its own"
)

// NotEndpoint is the decision on the side of a flow that is no pod of the
// cluster: nothing is enforced there.
func NotEndpoint(dir Direction, remote identity.ID, proto Proto, port uint16) Decision {
	return Decision{Direction: dir, Remote: remote, Proto: proto, Port: port, Verdict: Allow, Reason: ReasonNotEndpoint}
}

func (d Decision) String() string {
	s := d.Direction.String()
	if d.Endpoint != 0 {
		s += " of " + RemoteString(d.Endpoint)
	}
	prep := " from "
	if d.Direction == Egress {
		prep = " to "
	}
	s += fmt.Sprintf("%s%s %s/%d: %s", prep, RemoteString(d.Remote), d.Proto, d.Port, d.Reason)
	if d.Rule != nil {
		s += ": " + d.Rule.String()
		if len(d.Rule.Origins) > 0 {
			s += " (" + strings.Join(d.Rule.Origins, "; ") + ")"
		}
	}
	return s
}

// Lookup decides a new flow of the endpoint with remote identity remote
// (its source for ingress, its destination for egress), protocol proto (not
// Any) and destination port port.
func (res Result) Lookup(dir Direction, remote identity.ID, proto Proto, port uint16) Decision {
	d := Decision{Direction: dir, Remote: remote, Proto: proto, Port: port}
	d.Enforced = dir == Ingress && res.EnforceIngress || dir == Egress && res.EnforceEgress
	if !d.Enforced {
		d.Verdict, d.Reason = Allow, ReasonNotEnforced
		return d
	}
	best, bestSpec := -1, -1
	auth, authSpec := -1, -1 // the most specific entry requiring authentication
	for _, r := range res.Rules {
		if r.Direction != dir || r.RemoteIdentity != remote && r.RemoteIdentity != 0 {
			continue
		}
		spec, ok := specificity(r, proto, port)
		if !ok {
			continue
		}
		d.Matches = append(d.Matches, r)
		i := len(d.Matches) - 1
		if r.Verdict == Deny {
			if best < 0 || d.Matches[best].Verdict != Deny {
				best = i
			}
			continue
		}
		if best >= 0 && d.Matches[best].Verdict == Deny {
			continue
		}
		if r.AuthRequired && spec > authSpec {
			auth, authSpec = i, spec
		}
		if best < 0 || spec > bestSpec || spec == bestSpec && beats(r, d.Matches[best]) {
			best, bestSpec = i, spec
		}
	}
	switch {
	case best < 0:
		d.Verdict, d.Reason = Deny, ReasonDenied
		return d
	case d.Matches[best].Verdict == Deny:
		d.Verdict, d.Reason = Deny, ReasonDenylist
	case auth >= 0:
		// The datapath marks entries covered by one requiring
		// authentication as requiring it too: any match decides.
		d.Verdict, d.Reason, d.AuthRequired = d.Matches[best].Verdict, ReasonAuthRequired, true
		best = auth
	case d.Matches[best].Verdict == Redirect:
		d.Verdict, d.Reason = Redirect, ReasonRedirected
	default:
		d.Verdict, d.Reason = Allow, ReasonAllowed
	}
	rule := d.Matches[best]
	d.Rule = &rule
	if d.Verdict == Redirect {
		for _, l := range res.L7 {
			if l.Direction != dir || l.Proto != proto || port < l.Port || port > max(l.Port, l.EndPort) {
				continue
			}
			for _, id := range l.RemoteIdentities {
				if id == 0 || id == remote {
					d.L7 = append(d.L7, l)
					break
				}
			}
		}
	}
	return d
}

// beats breaks a tie of specificity: redirect beats allow, then the
// identity-specific entry wins.
func beats(a, b DatapathRule) bool {
	if a.Verdict != b.Verdict {
		return a.Verdict == Redirect
	}
	return a.RemoteIdentity != 0 && b.RemoteIdentity == 0
}

// specificity returns the datapath's prefix length of the entry's key part
// that matches (proto, port): 64 for L3 only, 72 for a protocol, 80+p for
// the port block of p bits containing port.
func specificity(r DatapathRule, proto Proto, port uint16) (int, bool) {
	switch {
	case r.Proto == Any && r.Port == 0:
		return 64, true
	case r.Proto == Any:
		if proto != TCP && proto != UDP && proto != SCTP {
			return 0, false
		}
	case r.Proto != proto:
		return 0, false
	case r.Port == 0:
		return 72, true
	}
	end := max(r.EndPort, r.Port)
	if port < r.Port || port > end {
		return 0, false
	}
	return 80 + blockBits(r.Port, end, port), true
}

// blockBits returns the prefix length of the aligned power-of-two block of
// start..end that contains port (the datapath writes ranges as such blocks).
func blockBits(start, end, port uint16) int {
	s, e := uint32(start), uint32(end)
	for s <= e {
		bits := 16
		for bits > 0 {
			size := uint32(1) << (16 - bits + 1)
			if s%size != 0 || s+size-1 > e {
				break
			}
			bits--
		}
		size := uint32(1) << (16 - bits)
		if uint32(port) >= s && uint32(port) < s+size {
			return bits
		}
		s += size
	}
	return 16
}

// TraceResult is a flow's fate between two endpoints: the source's egress
// policy, then the destination's ingress policy.
type TraceResult struct {
	Egress  Decision `json:"egress"`
	Ingress Decision `json:"ingress"`
	// Allowed is true when neither direction denies (flows needing
	// authentication pass once authenticated).
	Allowed bool `json:"allowed"`
}

func (t TraceResult) String() string {
	v := "DENIED"
	if t.Allowed {
		v = "ALLOWED"
	}
	return fmt.Sprintf("%s\n  %s\n  %s", v, t.Egress, t.Ingress)
}

// Trace decides a new flow from src to dst on proto/port, as both
// endpoints' datapaths would.
func (r *Resolver) Trace(src, dst Endpoint, proto Proto, port uint16) TraceResult {
	return TraceResolved(r.Resolve(src), src.Identity, r.Resolve(dst), dst.Identity, proto, port)
}

// TraceResolved decides a new flow from the endpoint of identity srcID
// to the one of dstID on proto/port from their resolved policies (as
// their nodes' agents hold them).
func TraceResolved(src Result, srcID identity.ID, dst Result, dstID identity.ID, proto Proto, port uint16) TraceResult {
	eg := src.Lookup(Egress, dstID, proto, port)
	eg.Endpoint = srcID
	in := dst.Lookup(Ingress, srcID, proto, port)
	in.Endpoint = dstID
	return TraceOf(eg, in)
}

// TraceOf is the fate of a flow the source's egress decision eg and the
// destination's ingress decision in decide.
func TraceOf(eg, in Decision) TraceResult {
	return TraceResult{Egress: eg, Ingress: in, Allowed: eg.Verdict != Deny && in.Verdict != Deny}
}

// Trace is New(policies, ids, cfg).Trace(src, dst, proto, port).
func Trace(src, dst Endpoint, proto Proto, port uint16, policies []Policy, ids IdentitySet, cfg Config) TraceResult {
	return New(policies, ids, cfg).Trace(src, dst, proto, port)
}

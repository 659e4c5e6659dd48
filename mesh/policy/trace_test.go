package policy

import (
	"testing"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

func TestBlockBits(t *testing.T) {
	for _, c := range []struct {
		start, end, port uint16
		want             int
	}{
		{80, 80, 80, 16},
		{8000, 8999, 8000, 10},   // 8000-8063
		{8000, 8999, 8064, 9},    // 8064-8191
		{8000, 8999, 8999, 13},   // 8992-8999
		{1, 65535, 1, 16},        // 1
		{1, 65535, 40000, 1},     // 32768-65535
		{0, 65535, 1234, 0},      // everything
		{30000, 32767, 32767, 5}, // 30720-32767 is 2048: 16-11
	} {
		if got := blockBits(c.start, c.end, c.port); got != c.want {
			t.Errorf("blockBits(%d, %d, %d) = %d, want %d", c.start, c.end, c.port, got, c.want)
		}
	}
}

func TestLookup(t *testing.T) {
	const peer, other identity.ID = 300, 301
	rule := func(remote identity.ID, proto Proto, port, end uint16, v Verdict, auth bool) DatapathRule {
		return DatapathRule{Direction: Ingress, RemoteIdentity: remote, Proto: proto, Port: port, EndPort: end, Verdict: v, AuthRequired: auth}
	}
	for _, c := range []struct {
		name   string
		rules  []DatapathRule
		proto  Proto
		port   uint16
		want   Verdict
		reason string
		auth   bool
		rule   int // index of the decisive rule; -1 none
	}{
		{"default deny", nil, TCP, 80, Deny, ReasonDenied, false, -1},
		{"L3 allow", []DatapathRule{rule(peer, Any, 0, 0, Allow, false)}, UDP, 53, Allow, ReasonAllowed, false, 0},
		{"other peer", []DatapathRule{rule(other, Any, 0, 0, Allow, false)}, TCP, 80, Deny, ReasonDenied, false, -1},
		{"wildcard peer", []DatapathRule{rule(0, TCP, 80, 0, Allow, false)}, TCP, 80, Allow, ReasonAllowed, false, 0},
		{"ANY with a port is not ICMP", []DatapathRule{rule(peer, Any, 8, 0, Allow, false)}, ICMP, 8, Deny, ReasonDenied, false, -1},
		{"ANY with a port is SCTP", []DatapathRule{rule(peer, Any, 8, 0, Allow, false)}, SCTP, 8, Allow, ReasonAllowed, false, 0},
		{"less specific deny wins", []DatapathRule{
			rule(peer, TCP, 80, 0, Allow, false), rule(0, Any, 0, 0, Deny, false)}, TCP, 80, Deny, ReasonDenylist, false, 1},
		{"deny on another port", []DatapathRule{
			rule(peer, TCP, 80, 0, Allow, false), rule(0, TCP, 81, 0, Deny, false)}, TCP, 80, Allow, ReasonAllowed, false, 0},
		{"more specific wins across lookups", []DatapathRule{
			rule(0, TCP, 80, 0, Redirect, false), rule(peer, Any, 0, 0, Allow, false)}, TCP, 80, Redirect, ReasonRedirected, false, 0},
		{"range block specificity", []DatapathRule{
			rule(peer, TCP, 8000, 8999, Allow, false), rule(0, TCP, 8000, 8063, Redirect, false)}, TCP, 8001, Redirect, ReasonRedirected, false, 1},
		{"tie: redirect beats allow", []DatapathRule{
			rule(peer, TCP, 80, 0, Allow, false), rule(0, TCP, 80, 0, Redirect, false)}, TCP, 80, Redirect, ReasonRedirected, false, 1},
		{"tie: identity-specific wins", []DatapathRule{
			rule(0, TCP, 0, 0, Allow, false), rule(peer, TCP, 0, 0, Allow, false)}, TCP, 80, Allow, ReasonAllowed, false, 1},
		{"authentication from a covering entry", []DatapathRule{
			rule(peer, Any, 0, 0, Allow, true), rule(peer, TCP, 80, 0, Allow, false)}, TCP, 80, Allow, ReasonAuthRequired, true, 0},
		{"authentication from the wildcard lookup", []DatapathRule{
			rule(0, TCP, 80, 0, Allow, true), rule(peer, TCP, 80, 0, Allow, false)}, TCP, 80, Allow, ReasonAuthRequired, true, 0},
		{"deny beats authentication", []DatapathRule{
			rule(peer, Any, 0, 0, Allow, true), rule(peer, TCP, 80, 0, Deny, false)}, TCP, 80, Deny, ReasonDenylist, false, 1},
	} {
		res := Result{EnforceIngress: true, Rules: c.rules}
		d := res.Lookup(Ingress, peer, c.proto, c.port)
		if d.Verdict != c.want || d.Reason != c.reason || d.AuthRequired != c.auth {
			t.Errorf("%s: %s (auth %v), want %s, %q (auth %v)", c.name, d.Verdict, d.AuthRequired, c.want, c.reason, c.auth)
		}
		switch {
		case c.rule < 0 && d.Rule != nil:
			t.Errorf("%s: decided by %s, want no rule", c.name, d.Rule)
		case c.rule >= 0 && (d.Rule == nil || d.Rule.String() != c.rules[c.rule].String()):
			t.Errorf("%s: decided by %v, want %s", c.name, d.Rule, c.rules[c.rule])
		}
	}

	// Not enforced: everything passes; egress looks at egress rules only.
	res := Result{EnforceIngress: true, Rules: []DatapathRule{{Direction: Ingress, Verdict: Deny}}}
	if d := res.Lookup(Egress, peer, TCP, 80); d.Verdict != Allow || d.Reason != ReasonNotEnforced {
		t.Errorf("egress not enforced: %s", d)
	}
}

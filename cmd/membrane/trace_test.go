package main

import (
	"net/netip"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

func TestParsePortProto(t *testing.T) {
	for _, c := range []struct {
		in    string
		proto model.Protocol
		port  uint16
		err   bool
	}{
		{in: "8080", proto: model.TCP, port: 8080},
		{in: "53/udp", proto: model.UDP, port: 53},
		{in: "9000/SCTP", proto: model.SCTP, port: 9000},
		{in: "0", err: true},
		{in: "70000", err: true},
		{in: "http", err: true},
		{in: "80/icmp", err: true},
	} {
		proto, port, err := parsePortProto(c.in)
		if (err != nil) != c.err || err == nil && (proto != c.proto || port != c.port) {
			t.Errorf("%q: %v/%d, %v", c.in, proto, port, err)
		}
	}
}

func TestVerdictWord(t *testing.T) {
	allow := policy.Decision{Verdict: policy.Allow}
	for _, c := range []struct {
		t    policy.TraceResult
		want string
	}{
		{policy.TraceResult{Egress: allow, Ingress: allow, Allowed: true}, "ALLOWED"},
		{policy.TraceResult{Egress: allow, Ingress: policy.Decision{Verdict: policy.Deny}}, "DENIED"},
		{policy.TraceResult{Egress: allow, Ingress: policy.Decision{Verdict: policy.Redirect}, Allowed: true}, "ALLOWED to the L7 proxy, whose HTTP rules decide each request"},
		{policy.TraceResult{Egress: allow, Ingress: policy.Decision{Verdict: policy.Allow, AuthRequired: true}, Allowed: true}, "ALLOWED once the peers are authenticated"},
	} {
		if got := verdictWord(c.t); got != c.want {
			t.Errorf("%+v: %q, want %q", c.t, got, c.want)
		}
	}
}

func TestHTTPRule(t *testing.T) {
	if got := httpRule(policy.HTTPRule{}); got != "every request" {
		t.Errorf("empty rule: %q", got)
	}
	got := httpRule(policy.HTTPRule{Method: "GET", Path: "/api/.*", Headers: []policy.HeaderMatch{{Name: "X-Tenant", Value: "a"}, {Name: "X-Debug"}}})
	if want := "method GET, path /api/.*, header X-Tenant: a, header X-Debug"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// TestTraceEndDecide: an address has no policy of its own; a pod's
// policy decides with its identity set.
func TestTraceEndDecide(t *testing.T) {
	addr := traceEnd{addr: netip.MustParseAddr("198.19.2.11"), id: identity.World}
	if d := addr.decide(policy.Egress, 300, model.TCP, 80); d.Verdict != policy.Allow || d.Reason != policy.ReasonNotEndpoint || d.Remote != 300 {
		t.Errorf("an address's decision: %+v", d)
	}
	pod := traceEnd{pod: &agentapi.PolicyEntry{Result: policy.Result{EnforceIngress: true}}, id: 300}
	d := pod.decide(policy.Ingress, identity.World, model.TCP, 80)
	if d.Verdict != policy.Deny || d.Endpoint != 300 || d.Remote != identity.World {
		t.Errorf("a pod enforcing ingress without rules: %+v", d)
	}
	if tr := policy.TraceOf(addr.decide(policy.Egress, 300, model.TCP, 80), d); tr.Allowed {
		t.Errorf("world -> the pod: %+v, want denied", tr)
	}
}

package agent

import (
	"net/netip"
	"testing"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

func TestDesiredIPCache(t *testing.T) {
	a := netip.MustParseAddr
	st := k8s.PolicyState{
		Nodes: []model.Node{
			{Name: "node1", IPs: []netip.Addr{a("198.18.1.10")}},
			{Name: "node2", IPs: []netip.Addr{a("198.18.1.11"), a("fd00::11")}},
		},
		APIServer: []netip.Addr{a("198.18.1.2")},
		Pods: []k8s.Pod{
			{Name: "a", IP: a("10.244.0.5"), Identity: 300},
			{Name: "waiting", IP: a("10.244.0.6")}, // no identity yet: left to the world
			{Name: "hostish", IP: a("198.18.1.11"), Identity: 301},
		},
	}
	cidrs := []policy.CIDRIdentity{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), ID: policy.MinCIDRIdentity}}
	got := desiredIPCache(st, "node1", cidrs)
	want := map[netip.Prefix]bpfpolicy.Identity{
		netip.MustParsePrefix("0.0.0.0/0"):      bpfpolicy.IdentityWorld,
		netip.MustParsePrefix("203.0.113.0/24"): bpfpolicy.Identity(policy.MinCIDRIdentity),
		netip.MustParsePrefix("198.18.1.10/32"): bpfpolicy.IdentityHost,
		netip.MustParsePrefix("198.18.1.11/32"): 301, // a pod's identity wins over its node's
		netip.MustParsePrefix("198.18.1.2/32"):  bpfpolicy.IdentityKubeAPIServer,
		netip.MustParsePrefix("10.244.0.5/32"):  300,
	}
	if len(got) != len(want) {
		t.Errorf("got %d entries %v, want %d", len(got), got, len(want))
	}
	for p, id := range want {
		if got[p] != id {
			t.Errorf("%s: got %v, want %v", p, got[p], id)
		}
	}
}

func TestDatapathRules(t *testing.T) {
	in := []policy.DatapathRule{
		{Direction: policy.Ingress, RemoteIdentity: identity.ID(258), Proto: policy.TCP, Port: 8080, Verdict: policy.Allow},
		{Direction: policy.Egress, Proto: policy.UDP, Port: 53, EndPort: 54, Verdict: policy.Deny},
		{Direction: policy.Ingress, RemoteIdentity: 1, Verdict: policy.Redirect, ProxyPort: 15001, AuthRequired: true},
	}
	want := []bpfpolicy.Rule{
		{Key: bpfpolicy.PolicyKey{Direction: bpfpolicy.Ingress, RemoteIdentity: 258, Proto: bpfpolicy.TCP, Port: 8080}, Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Allow}},
		{Key: bpfpolicy.PolicyKey{Direction: bpfpolicy.Egress, Proto: bpfpolicy.UDP, Port: 53, EndPort: 54}, Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Deny}},
		{Key: bpfpolicy.PolicyKey{Direction: bpfpolicy.Ingress, RemoteIdentity: bpfpolicy.IdentityHost}, Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Redirect, ProxyPort: 15001, AuthRequired: true}},
	}
	got := datapathRules(in)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("rule %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

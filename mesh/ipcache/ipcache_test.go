package ipcache

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

func TestBuild(t *testing.T) {
	a := netip.MustParseAddr
	in := Input{
		Node: "node1",
		Nodes: []model.Node{
			{Name: "node1", IPs: []netip.Addr{a("198.18.1.10")}, IngressIP: a("10.244.0.1")},
			{Name: "node2", IPs: []netip.Addr{a("198.18.1.11"), a("fd00::11")}, IngressIP: a("10.244.1.1")},
		},
		APIServer: []netip.Addr{a("198.18.1.2")},
		Pods: []endpoint.Pod{
			{Name: "a", IP: a("10.244.0.5"), Identity: 300},
			{Name: "waiting", IP: a("10.244.0.6")}, // no identity yet: left to the world
			{Name: "hostish", IP: a("198.18.1.11"), Identity: 301},
		},
		CIDRs: []policy.CIDRIdentity{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), ID: policy.MinCIDRIdentity}},
	}
	got := Build(in)
	want := Map{
		netip.MustParsePrefix("0.0.0.0/0"):      identity.World,
		netip.MustParsePrefix("203.0.113.0/24"): policy.MinCIDRIdentity,
		netip.MustParsePrefix("198.18.1.10/32"): identity.Host,
		netip.MustParsePrefix("198.18.1.11/32"): 301, // a pod's identity wins over its node's
		netip.MustParsePrefix("198.18.1.2/32"):  identity.KubeAPIServer,
		netip.MustParsePrefix("10.244.0.5/32"):  300,
		netip.MustParsePrefix("10.244.0.1/32"):  identity.Ingress, // every node's gateway source
		netip.MustParsePrefix("10.244.1.1/32"):  identity.Ingress,
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

func TestByIdentity(t *testing.T) {
	p := netip.MustParsePrefix
	m := Map{p("10.0.2.7/32"): 300, p("10.0.1.7/32"): 300, p("10.0.0.0/16"): 300, p("10.0.1.9/32"): 400, p("0.0.0.0/0"): identity.World}
	want := map[identity.ID][]netip.Prefix{
		300:            {p("10.0.0.0/16"), p("10.0.1.7/32"), p("10.0.2.7/32")},
		400:            {p("10.0.1.9/32")},
		identity.World: {p("0.0.0.0/0")},
	}
	if d := cmp.Diff(want, m.ByIdentity(), cmpopts.EquateComparable(netip.Prefix{})); d != "" {
		t.Errorf("by identity (-want +got):\n%s", d)
	}
}

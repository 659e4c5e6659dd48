package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/translate"
)

func TestL7Config(t *testing.T) {
	pfx := netip.MustParsePrefix
	ipcache := map[netip.Prefix]bpfpolicy.Identity{
		pfx("0.0.0.0/0"):     bpfpolicy.IdentityWorld,
		pfx("10.0.1.7/32"):   300,
		pfx("10.0.2.7/32"):   300,
		pfx("10.0.1.9/32"):   400,
		pfx("192.0.2.10/32"): bpfpolicy.IdentityHost,
	}
	get := []policy.HTTPRule{{Method: "GET", Path: "/api/.*", Headers: []policy.HeaderMatch{
		{Name: "Content-Type", Value: "application/json"},
		{Name: "X-Trace", Mismatch: "LOG"}, // does not deny: no requirement
	}}}
	eps := []l7Endpoint{{name: "payments/payment-a", ip: netip.MustParseAddr("10.0.1.5"), rules: []policy.L7Rule{
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3000, RemoteIdentities: []identity.ID{300, 500}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/payment-l7 rules[0] ingress[0]"}},
		// Identity 500 has no address: the rule lets nobody in.
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3001, RemoteIdentities: []identity.ID{500}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/other rules[0] ingress[0]"}},
		{Direction: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 81, RemoteIdentities: []identity.ID{0}, HTTP: []policy.HTTPRule{{}},
			Origins: []string{"MembraneClusterwideNetworkPolicy web rules[1] egress[0]"}},
		{Direction: policy.Egress, Proto: policy.TCP, Port: 1000, EndPort: 2000, RemoteIdentities: []identity.ID{0}},
	}}}
	n, origins, problems := l7Config(15001, eps, ipcache)
	hdr := []translate.HTTPRule{{Method: "GET", Path: "/api/.*", Headers: []translate.Header{{Name: "Content-Type", Value: "application/json"}}}}
	ep := netip.MustParseAddr("10.0.1.5")
	want := translate.Node{ProxyPort: 15001, AccessLogCluster: accessLogCluster, UpstreamMark: bpfpolicy.MarkMagicFromProxy, Ports: []translate.Port{
		{Direction: translate.Ingress, Endpoint: ep, Port: 3000, Rules: []translate.Rule{{Peers: []netip.Prefix{pfx("10.0.1.7/32"), pfx("10.0.2.7/32")}, HTTP: hdr}}},
		{Direction: translate.Ingress, Endpoint: ep, Port: 3001},
		{Direction: translate.Egress, Endpoint: ep, Port: 80, Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{}}}}},
		{Direction: translate.Egress, Endpoint: ep, Port: 81, Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{}}}}},
	}}
	if d := cmp.Diff(want, n, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); d != "" {
		t.Errorf("node (-want +got):\n%s", d)
	}
	if len(problems) != 1 {
		t.Errorf("problems %v, want the port range over %d ports", problems, maxL7PortRange)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range origins {
			if !yield(k) {
				return
			}
		}
	})
	if d := cmp.Diff([]string{"MembraneClusterwideNetworkPolicy web", "MembraneNetworkPolicy payments/other", "MembraneNetworkPolicy payments/payment-l7"}, names); d != "" {
		t.Errorf("policies (-want +got):\n%s", d)
	}
	if _, err := n.Resources(); err != nil {
		t.Errorf("the configuration does not translate: %v", err)
	}

	// A rejection names the policies whose contribution changed.
	eps[0].rules[0].HTTP = []policy.HTTPRule{{Method: "POST"}}
	_, rejected, _ := l7Config(15001, eps, ipcache)
	if got := changedPolicies(rejected, origins); !slices.Equal(got, []string{"MembraneNetworkPolicy payments/payment-l7"}) {
		t.Errorf("changed policies %v, want payment-l7 only", got)
	}
	if got := changedPolicies(origins, origins); len(got) != 3 {
		t.Errorf("nothing changed: want every policy blamed, got %v", got)
	}
}

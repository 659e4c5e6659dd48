package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/l7"
	"github.com/membrane-mesh/membrane/xds/server"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// TestChangedPolicies: a rejection names the policies whose contribution
// to the L7 configuration changed (the translation itself is tested in
// xds/l7).
func TestChangedPolicies(t *testing.T) {
	pfx := netip.MustParsePrefix
	ipc := ipcache.Map{pfx("0.0.0.0/0"): identity.World, pfx("10.0.1.7/32"): 300}
	get := []policy.HTTPRule{{Method: "GET", Path: "/api/.*"}}
	eps := []l7.Endpoint{{Name: "payments/payment-a", IP: netip.MustParseAddr("10.0.1.5"), Rules: []policy.L7Rule{
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3000, RemoteIdentities: []identity.ID{300}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/payment-l7 rules[0] ingress[0]"}},
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3001, RemoteIdentities: []identity.ID{500}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/other rules[0] ingress[0]"}},
		{Direction: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 81, RemoteIdentities: []identity.ID{0}, HTTP: []policy.HTTPRule{{}},
			Origins: []string{"MembraneClusterwideNetworkPolicy web rules[1] egress[0]"}},
	}}}
	opts := l7.Options{ProxyPort: 15001, AccessLogCluster: accessLogCluster}
	_, origins, _ := l7.Config(opts, eps, ipc)
	eps[0].Rules[0].HTTP = []policy.HTTPRule{{Method: "POST"}}
	_, rejected, _ := l7.Config(opts, eps, ipc)
	if got := changedPolicies(rejected, origins); !slices.Equal(got, []string{"MembraneNetworkPolicy payments/payment-l7"}) {
		t.Errorf("changed policies %v, want payment-l7 only", got)
	}
	if got := changedPolicies(origins, origins); len(got) != 3 {
		t.Errorf("nothing changed: want every policy blamed, got %v", got)
	}
}

// TestRejectedPolicies: a rejected route configuration names the changed
// policies among its own, not a policy that changed elsewhere in the same
// configuration; its own policies when none of them changed (e.g. a peer
// address); the changed ones when the rejection is not about a route
// configuration.
func TestRejectedPolicies(t *testing.T) {
	pfx := netip.MustParsePrefix
	ipc := ipcache.Map{pfx("0.0.0.0/0"): identity.World, pfx("10.0.1.7/32"): 300}
	get := []policy.HTTPRule{{Method: "GET", Path: "/api/.*"}}
	eps := []l7.Endpoint{{Name: "payments/payment-a", IP: netip.MustParseAddr("10.0.1.5"), Rules: []policy.L7Rule{
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3000, RemoteIdentities: []identity.ID{300}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/payment-l7 rules[0] ingress[0]"}},
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3000, RemoteIdentities: []identity.ID{300}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/audit rules[0] ingress[0]"}},
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3001, RemoteIdentities: []identity.ID{300}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/other rules[0] ingress[0]"}},
	}}}
	opts := l7.Options{ProxyPort: 15001, AccessLogCluster: accessLogCluster}
	config := func() origins {
		n, o, problems := l7.Config(opts, eps, ipc)
		if len(problems) > 0 {
			t.Fatal(problems)
		}
		return origins{policies: o, routes: translate.RouteOrigins(n)}
	}
	inForce := config()
	// payment-l7 and other change; Envoy rejects port 3000's route configuration.
	eps[0].Rules[0].HTTP = []policy.HTTPRule{{Method: "POST"}}
	eps[0].Rules[2].HTTP = []policy.HTTPRule{{Method: "PUT"}}
	rejected := config()
	// routeOf names the route configuration of endpoint port port.
	routeOf := func(port int) string {
		for name := range rejected.routes {
			if strings.HasPrefix(name, "ingress/") && strings.HasSuffix(name, fmt.Sprintf(":%d", port)) {
				return name
			}
		}
		t.Fatalf("no route configuration for port %d in %v", port, rejected.routes)
		return ""
	}
	for _, tc := range []struct {
		name      string
		resources []string
		inForce   origins
		want      []string
	}{
		{"one route configuration", []string{routeOf(3000)}, inForce, []string{"MembraneNetworkPolicy payments/payment-l7"}},
		{"the other", []string{routeOf(3001)}, inForce, []string{"MembraneNetworkPolicy payments/other"}},
		{"nothing in force", []string{routeOf(3000)}, origins{},
			[]string{"MembraneNetworkPolicy payments/audit", "MembraneNetworkPolicy payments/payment-l7"}},
		{"none of its policies changed", []string{routeOf(3000)}, rejected,
			[]string{"MembraneNetworkPolicy payments/audit", "MembraneNetworkPolicy payments/payment-l7"}},
		{"the listener", []string{"membrane-proxy"}, inForce,
			[]string{"MembraneNetworkPolicy payments/other", "MembraneNetworkPolicy payments/payment-l7"}},
	} {
		if got := rejectedPolicies(tc.resources, rejected, tc.inForce); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestProxyUpdateNewPorts: update reports an endpoint port new to the
// proxy (the regeneration then waits for Envoy before redirecting), be it
// a new filter chain or a pod joining one; not a change of rules or an
// unchanged configuration. With no Envoy connected the wait returns at
// once.
func TestProxyUpdateNewPorts(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newProxy(log, Config{NodeName: "n1"}, nil, flow.NewStore(16, nil), flow.MapEnricher{})
	port := func(ep string, n uint16, path string) translate.Port {
		return translate.Port{Direction: translate.Ingress, Endpoint: netip.MustParseAddr(ep), Port: n,
			Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET", Path: path}}}}}
	}
	node := func(ports ...translate.Port) translate.Node { return translate.Node{ProxyPort: 15001, Ports: ports} }
	for _, step := range []struct {
		name string
		n    translate.Node
		want bool
	}{
		{"first chain", node(port("10.0.0.5", 80, "/a")), true},
		{"unchanged", node(port("10.0.0.5", 80, "/a")), false},
		{"other rules, same chain", node(port("10.0.0.5", 80, "/b")), false},
		{"a second port", node(port("10.0.0.5", 80, "/b"), port("10.0.0.5", 8080, "/b")), true},
		{"a port removed", node(port("10.0.0.5", 8080, "/b")), false},
		// Same rules: it shares the chain, and is new to the matcher.
		{"another endpoint", node(port("10.0.0.5", 8080, "/b"), port("10.0.0.6", 8080, "/b")), true},
	} {
		if got := p.update(t.Context(), step.n, nil, nil); got != step.want {
			t.Errorf("%s: new ports %v, want %v", step.name, got, step.want)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.waitInSync(t.Context())
	}()
	select {
	case <-done:
	case <-time.After(proxyAckTimeout / 2):
		t.Fatal("waitInSync waited without a connected Envoy")
	}
}

// TestProxyKeepsDroppedChains: a chain the configuration drops is kept,
// with its last rules, in what is published before the maps are written.
func TestProxyKeepsDroppedChains(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newProxy(log, Config{NodeName: "n1"}, nil, flow.NewStore(16, nil), flow.MapEnricher{})
	a := translate.Port{Direction: translate.Ingress, Endpoint: netip.MustParseAddr("10.0.0.5"), Port: 80}
	b := translate.Port{Direction: translate.Egress, Endpoint: netip.MustParseAddr("10.0.0.5"), Port: 80,
		Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET"}}}}}
	node := func(ports ...translate.Port) translate.Node { return translate.Node{ProxyPort: 15001, Ports: ports} }
	if n, dropped := p.withDroppedChains(node(a)); dropped || len(n.Ports) != 1 {
		t.Errorf("nothing published yet: %+v, dropped %v; want the configuration as it is", n.Ports, dropped)
	}
	p.update(t.Context(), node(a, b), nil, nil)
	if n, dropped := p.withDroppedChains(node(a, b)); dropped || len(n.Ports) != 2 {
		t.Errorf("unchanged: %+v, dropped %v", n.Ports, dropped)
	}
	aOther := a
	aOther.Rules = b.Rules
	n, dropped := p.withDroppedChains(node(aOther))
	if !dropped || len(n.Ports) != 2 || n.Ports[0].Rules == nil || n.Ports[1].Direction != translate.Egress || n.Ports[1].Rules == nil {
		t.Errorf("egress chain dropped: %+v, dropped %v; want the new ingress rules and the egress chain as it was", n.Ports, dropped)
	}
}

// TestStallGate: after a wait that timed out, the regenerations do not
// wait while Envoy runs the same configuration, and wait again once it
// has run another.
func TestStallGate(t *testing.T) {
	v1 := server.Status{Streams: 1, Acked: "v1", Accepted: 1}
	var g stallGate
	if !g.wait(v1) {
		t.Fatal("no wait timed out yet: want a wait")
	}
	g.timedOut(v1)
	if g.wait(v1) || g.wait(v1) {
		t.Error("Envoy still runs v1 after the timeout: want no wait")
	}
	// Envoy ran v2, then v1 again (a rule removed and added back): the
	// version is the one of the timeout, but Envoy answered since.
	if !g.wait(server.Status{Streams: 1, Acked: "v1", Accepted: 3}) {
		t.Error("Envoy ran v2 and v1 again since: want a wait")
	}
	g.timedOut(v1)
	// A new Envoy (a new stream) that runs nothing yet is waited for.
	if !g.wait(server.Status{Streams: 2, Accepted: 1}) {
		t.Error("a new Envoy connected since: want a wait")
	}
	if !g.wait(v1) {
		t.Error("a wait succeeded since the timeout: want the gate open")
	}
}

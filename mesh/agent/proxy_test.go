package agent

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

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

// TestProxyHolds: a port new to the proxy (a new filter chain, or an
// endpoint joining one) is held until Envoy runs the configuration,
// rejects it, disconnects, or does not answer in time; a change of rules
// or an unchanged configuration holds nothing. After a timeout nothing is
// held while Envoy runs nothing newer. Each end of a hold is counted; one
// that run sees (not the regeneration's own update) asks for a
// regeneration.
func TestProxyHolds(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newProxy(log, Config{NodeName: "n1"}, nil, flow.NewStore(16, nil), flow.MapEnricher{})
	st := server.Status{Connected: true, Streams: 1, Acked: "v0", Accepted: 1}
	p.status = func() server.Status { return st }
	p.waits = &proxyWaits{total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "waits"}, []string{"outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wait_seconds"})}
	woken := 0
	p.onReady = func() { woken++ }
	port := func(ep string, n uint16, path string) translate.Port {
		return translate.Port{Direction: translate.Ingress, Endpoint: netip.MustParseAddr(ep), Port: n,
			Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET", Path: path}}}}}
	}
	node := func(ports ...translate.Port) translate.Node { return translate.Node{ProxyPort: 15001, Ports: ports} }
	key := func(ep string, n uint16) redirected {
		return redirected{translate.Ingress, netip.MustParseAddr(ep), n}
	}
	runs := func() { st.Acked, st.Accepted = st.Published, st.Accepted+1 }
	outcomes := func() map[string]float64 {
		out := map[string]float64{}
		for _, o := range []string{waitReady, waitRejected, waitNotConnected, waitTimeout, waitSkipped} {
			out[o] = testutil.ToFloat64(p.waits.total.WithLabelValues(o))
		}
		return out
	}
	for i, step := range []struct {
		name string
		n    translate.Node
		// same: the configuration published does not change; connect:
		// Envoy connects before.
		same, connect bool
		held          []redirected // after update
		// envoy changes the status before settle (nil: none); after is
		// settle's time since the hold began.
		envoy func()
		after time.Duration
		ended string // how the hold ended ("": it did not)
	}{
		{name: "first chain", n: node(port("10.0.0.5", 80, "/a")), held: []redirected{key("10.0.0.5", 80)}, after: proxyAckTimeout / 2},
		{name: "Envoy answers late", n: node(port("10.0.0.5", 80, "/a")), same: true, held: []redirected{key("10.0.0.5", 80)},
			envoy: runs, after: proxyAckTimeout - time.Millisecond, ended: waitReady},
		{name: "unchanged", n: node(port("10.0.0.5", 80, "/a")), same: true},
		{name: "other rules, same chain", n: node(port("10.0.0.5", 80, "/b"))},
		{name: "a second port", n: node(port("10.0.0.5", 80, "/b"), port("10.0.0.5", 8080, "/b")),
			held: []redirected{key("10.0.0.5", 8080)}, after: proxyAckTimeout, ended: waitTimeout},
		// Same rules: it shares the chain, and is new to the matcher. Envoy
		// ran nothing since the timeout: the hold ends in update.
		{name: "another endpoint, Envoy stuck", n: node(port("10.0.0.5", 8080, "/b"), port("10.0.0.6", 8080, "/b")), ended: waitSkipped},
		{name: "a port removed", n: node(port("10.0.0.6", 8080, "/b")), envoy: runs},
		{name: "a port added again", n: node(port("10.0.0.5", 8080, "/b"), port("10.0.0.6", 8080, "/b")),
			held: []redirected{key("10.0.0.5", 8080)}, envoy: func() { st.Connected = false }, ended: waitNotConnected},
		{name: "rejected", n: node(port("10.0.0.5", 8080, "/b"), port("10.0.0.6", 8080, "/b"), port("10.0.0.7", 8080, "/b")),
			connect: true, held: []redirected{key("10.0.0.7", 8080)}, ended: waitRejected,
			envoy: func() { st.Rejected = &server.Rejection{Version: st.Published} }},
	} {
		if !step.same {
			st.Published = fmt.Sprintf("v%d", i+1)
		}
		if step.connect {
			st.Connected, st.Streams = true, st.Streams+1
		}
		before, woke := outcomes(), woken
		p.update(t.Context(), step.n, nil, nil)
		// At most one port is held at a time here: no order to sort.
		if got := slices.Collect(maps.Keys(p.held())); !slices.Equal(got, step.held) {
			t.Errorf("%s: held %v, want %v", step.name, got, step.held)
		}
		if step.envoy != nil {
			step.envoy()
		}
		if at, ok := p.holdDeadline(); ok {
			p.settle(at.Add(step.after-proxyAckTimeout), true)
		}
		ended := ""
		for o, n := range outcomes() {
			if n != before[o] {
				ended += o
			}
		}
		if ended != step.ended {
			t.Errorf("%s: the hold ended %q, want %q", step.name, ended, step.ended)
		}
		if step.ended != "" && len(p.held()) != 0 {
			t.Errorf("%s: %v still held after the hold ended", step.name, p.held())
		}
		wake := 0
		if len(step.held) > 0 && step.ended != "" {
			wake = 1
		}
		if woken-woke != wake {
			t.Errorf("%s: %d regenerations asked for, want %d", step.name, woken-woke, wake)
		}
	}
	// Every hold that ended is timed, from its publication: 2 s less 1 ms
	// (late), 2 s (timeout), 0 (skipped, not connected, rejected).
	var m dto.Metric
	if err := p.waits.seconds.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	if h := m.GetHistogram(); h.GetSampleCount() != 5 || math.Abs(h.GetSampleSum()-(2*proxyAckTimeout-time.Millisecond).Seconds()) > 1e-9 {
		t.Errorf("wait_seconds: %d waits, %.6f s in all; want 5, %.6f s", h.GetSampleCount(), h.GetSampleSum(), (2*proxyAckTimeout - time.Millisecond).Seconds())
	}
}

// TestRedirectsTo: an endpoint is held when one of its rules redirects to
// the L7 proxy (not the DNS proxy) on a held port of its own, in the
// rule's direction, a port range included.
func TestRedirectsTo(t *testing.T) {
	ip, other := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")
	held := map[redirected]bool{{translate.Ingress, ip, 8080}: true, {translate.Egress, ip, 53}: true}
	rule := func(dir policy.Direction, port, end, proxy uint16) []policy.DatapathRule {
		return []policy.DatapathRule{
			{Direction: policy.Ingress, Proto: policy.TCP, Port: 80, Verdict: policy.Allow},
			{Direction: dir, Proto: policy.TCP, Port: port, EndPort: end, Verdict: policy.Redirect, ProxyPort: proxy},
		}
	}
	for _, tc := range []struct {
		name  string
		rules []policy.DatapathRule
		ip    netip.Addr
		want  bool
	}{
		{"held port", rule(policy.Ingress, 8080, 0, 15001), ip, true},
		{"in a range", rule(policy.Ingress, 8000, 8100, 15001), ip, true},
		{"range below", rule(policy.Ingress, 7000, 8079, 15001), ip, false},
		{"other direction", rule(policy.Egress, 8080, 0, 15001), ip, false},
		{"other endpoint", rule(policy.Ingress, 8080, 0, 15001), other, false},
		{"the DNS proxy", rule(policy.Egress, 53, 0, 15053), ip, false},
		{"egress to the L7 proxy", rule(policy.Egress, 53, 0, 15001), ip, true},
		{"last port", rule(policy.Ingress, 65535, 65535, 15001), ip, false},
	} {
		if got := redirectsTo(tc.rules, tc.ip, 15001, held); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if redirectsTo(rule(policy.Ingress, 8080, 0, 15001), ip, 15001, nil) {
		t.Error("nothing held: want false")
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

// twoPodNode is an L7 configuration of two pods whose port 80 has one
// rule, from origins (its path names them).
func twoPodNode(origins ...string) translate.Node {
	n := translate.Node{ProxyPort: 15001}
	for _, ip := range []string{"10.0.0.5", "10.0.0.6"} {
		n.Ports = append(n.Ports, translate.Port{Direction: translate.Ingress, Endpoint: netip.MustParseAddr(ip), Port: 80, Origins: origins,
			Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{Method: "GET", Path: "/" + strings.Join(origins, ",")}}}}})
	}
	return n
}

// TestProxyPrepareKeepsChains: a policy joining the set of a group's pods
// keeps the group's filter chain as it was (Envoy drains none of its
// connections) and changes its route configuration; an unchanged
// configuration keeps its labels.
func TestProxyPrepareKeepsChains(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := newProxy(log, Config{NodeName: "n1"}, nil, flow.NewStore(16, nil), flow.MapEnricher{})
	node := twoPodNode
	publish := func(n translate.Node) translate.Resources {
		t.Helper()
		next, pub, dropped := p.prepare(n)
		if dropped {
			t.Fatalf("no port was dropped: got dropped chains")
		}
		if !reflect.DeepEqual(next, pub) {
			t.Fatalf("nothing dropped: want what is published to be the configuration")
		}
		p.update(t.Context(), pub, nil, nil)
		return p.l7Res
	}
	before := publish(node("MembraneNetworkPolicy shop/a"))
	after := publish(node("MembraneNetworkPolicy shop/a", "MembraneNetworkPolicy shop/b"))
	fb, fa := before.Listeners[0].GetFilterChains(), after.Listeners[0].GetFilterChains()
	if len(fb) != 1 || len(fa) != 1 || !proto.Equal(fb[0], fa[0]) {
		t.Errorf("a policy joined the group: chains %v then %v, want the same one", fb, fa)
	}
	if proto.Equal(before.Routes[0], after.Routes[0]) || before.Routes[0].GetName() != after.Routes[0].GetName() {
		t.Error("a policy joined the group: want its route configuration changed under the same name")
	}
	if again, _, _ := p.prepare(node("MembraneNetworkPolicy shop/a", "MembraneNetworkPolicy shop/b")); !reflect.DeepEqual(again, *p.last) {
		t.Errorf("unchanged: prepared %+v, want what was published last", again)
	}
}

// TestProxyGroupsSurviveRestart: a restarted agent publishes the chains
// of its groups under the names they had (the node's Envoy keeps them),
// also when a policy joined a group while it was down; a file it cannot
// use costs the names, not the configuration.
func TestProxyGroupsSurviveRestart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{NodeName: "n1", StateDir: filepath.Join(t.TempDir(), "state")}
	node := twoPodNode
	const a, b, c = "MembraneNetworkPolicy shop/a", "MembraneNetworkPolicy shop/b", "MembraneNetworkPolicy shop/c"
	publish := func(p *proxy, n translate.Node) string {
		t.Helper()
		_, pub, _ := p.prepare(n)
		p.update(t.Context(), pub, nil, nil)
		p.saveGroups()
		chains := p.l7Res.Listeners[0].GetFilterChains()
		if len(chains) != 1 {
			t.Fatalf("%d chains, want one", len(chains))
		}
		return chains[0].GetName()
	}
	first := newProxy(log, cfg, nil, flow.NewStore(16, nil), flow.MapEnricher{})
	name := publish(first, node(a))
	if got := publish(first, node(a, b)); got != name {
		t.Fatalf("a policy joined the group: chain %s, want %s kept", got, name)
	}
	for _, tc := range []struct {
		what string
		node translate.Node
	}{
		{"restarted", node(a, b)},
		{"restarted after a policy joined", node(a, b, c)},
	} {
		p := newProxy(log, cfg, nil, flow.NewStore(16, nil), flow.MapEnricher{})
		if got := publish(p, tc.node); got != name {
			t.Errorf("%s: chain %s, want %s kept", tc.what, got, name)
		}
	}

	// A file the agent cannot use: the digests name the chains.
	if err := os.WriteFile(cfg.proxyGroupsFile(), []byte(`{"version":1,"groups":[{"direction":"ingress","port":80,"origins":["b","a"],"label":"group-000000000000","endpoints":[]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadProxyGroups(cfg.proxyGroupsFile()); err == nil || !strings.Contains(err.Error(), "groups[0].origins: must be sorted") {
		t.Errorf("loading unsorted origins: error %v, want one naming groups[0].origins", err)
	}
	p := newProxy(log, cfg, nil, flow.NewStore(16, nil), flow.MapEnricher{})
	got := publish(p, node(a, b, c))
	if got == name || !strings.HasPrefix(got, "ingress/group-") {
		t.Errorf("unusable file: chain %s, want one named after its policies' digest", got)
	}
	// The next save replaces the file.
	if gs, err := loadProxyGroups(cfg.proxyGroupsFile()); err != nil || len(gs) != 1 || got != "ingress/"+gs[0].Label+":80" {
		t.Errorf("after publishing: the file holds %+v (%v), want the group of chain %s", gs, err, got)
	}
}

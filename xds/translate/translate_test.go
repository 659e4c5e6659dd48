package translate

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/xds/xdstest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenCases reads and translates every testdata/*.in.yaml.
func goldenCases(t *testing.T) []xdstest.GoldenCase[Node, Resources] {
	return xdstest.GoldenCases(t, func(raw []byte) (Node, Resources, error) {
		var n Node
		if err := yaml.UnmarshalStrict(raw, &n); err != nil {
			return n, Resources{}, fmt.Errorf("parse: %w", err)
		}
		out, err := n.Resources()
		return n, out, err
	})
}

// TestResourcesGolden compares the translation of testdata/<case>.in.yaml
// with <case>.listeners.json, <case>.routes.json and <case>.clusters.json
// (go test ./xds/translate -update rewrites them).
func TestResourcesGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".listeners.json"), c.Out.Listeners, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".routes.json"), c.Out.Routes, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".clusters.json"), c.Out.Clusters, *update)
		})
	}
}

// TestResourcesValid checks the output against the API's own constraints
// (protoc-gen-validate), deeply, and that translating twice gives the
// same bytes (snapshot versions must not churn).
func TestResourcesValid(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			for _, l := range c.Out.Listeners {
				if err := l.ValidateAll(); err != nil {
					t.Errorf("listener %s: %v", l.GetName(), err)
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						xdstest.ValidateAny(t, f.GetTypedConfig())
					}
				}
			}
			for _, rc := range c.Out.Routes {
				if err := rc.ValidateAll(); err != nil {
					t.Errorf("route configuration %s: %v", rc.GetName(), err)
				}
				for _, vh := range rc.GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						for _, cfg := range r.GetTypedPerFilterConfig() {
							xdstest.ValidateAny(t, cfg)
						}
					}
				}
			}
			for _, cl := range c.Out.Clusters {
				if err := cl.ValidateAll(); err != nil {
					t.Errorf("cluster %s: %v", cl.GetName(), err)
				}
			}
			again, err := c.In.Resources()
			if err != nil {
				t.Fatal(err)
			}
			checkSameBytes(t, c.Out, again)
			checkReferences(t, c.Out)
		})
	}
}

// checkSameBytes fails unless a and b marshal to the same bytes, resource
// by resource.
func checkSameBytes(t *testing.T, a, b Resources) {
	t.Helper()
	opts := proto.MarshalOptions{Deterministic: true}
	same := func(kind string, i int, x, y proto.Message) {
		t.Helper()
		bx, _ := opts.Marshal(x)
		by, _ := opts.Marshal(y)
		if !bytes.Equal(bx, by) {
			t.Errorf("%s %d: two translations differ", kind, i)
		}
	}
	if len(a.Listeners) != len(b.Listeners) || len(a.Routes) != len(b.Routes) || len(a.Clusters) != len(b.Clusters) {
		t.Fatalf("two translations differ in size: %d/%d/%d and %d/%d/%d listeners/routes/clusters",
			len(a.Listeners), len(a.Routes), len(a.Clusters), len(b.Listeners), len(b.Routes), len(b.Clusters))
	}
	for i := range a.Listeners {
		same("listener", i, a.Listeners[i], b.Listeners[i])
	}
	for i := range a.Routes {
		same("route configuration", i, a.Routes[i], b.Routes[i])
	}
	for i := range a.Clusters {
		same("cluster", i, a.Clusters[i], b.Clusters[i])
	}
}

// checkReferences checks that every filter chain's HTTP connection manager
// names a route configuration of the output, each one once, and that
// every per-route RBAC configuration belongs to a filter of its chain.
func checkReferences(t *testing.T, res Resources) {
	t.Helper()
	routes := map[string]*routev3.RouteConfiguration{}
	for _, rc := range res.Routes {
		routes[rc.GetName()] = rc
	}
	used := map[string]bool{}
	for _, l := range res.Listeners {
		for _, fc := range l.GetFilterChains() {
			if fc.GetName() == NoPortsChain {
				if len(fc.GetFilters()) != 0 || len(l.GetFilterChains()) != 1 {
					t.Errorf("chain %s: %d filters beside %d chains, want none and alone", NoPortsChain, len(fc.GetFilters()), len(l.GetFilterChains())-1)
				}
				continue
			}
			var m hcmv3.HttpConnectionManager
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
				t.Fatal(err)
			}
			name := m.GetRds().GetRouteConfigName()
			rc, ok := routes[name]
			if !ok || used[name] {
				t.Errorf("chain %s: route configuration %q missing or shared", fc.GetName(), name)
				continue
			}
			used[name] = true
			filters := map[string]bool{}
			for _, f := range m.GetHttpFilters() {
				filters[f.GetName()] = true
			}
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					for key := range r.GetTypedPerFilterConfig() {
						if !filters[key] {
							t.Errorf("route configuration %s: configuration of %q, which chain %s does not have", name, key, fc.GetName())
						}
					}
					if len(r.GetTypedPerFilterConfig()) != len(filters)-1 {
						t.Errorf("route configuration %s: %d RBAC configurations for %d RBAC filters", name, len(r.GetTypedPerFilterConfig()), len(filters)-1)
					}
				}
			}
		}
	}
	if len(used) != len(routes) {
		t.Errorf("%d route configurations, %d used by the listener", len(routes), len(used))
	}
}

// TestTranslatorReuse: one Translator fed a series of changes (a rule's
// path, a peer, a port added and removed, a setting) gives what a fresh
// translation gives each time, reuses the unchanged route configurations
// and listener (the same objects), and is not fooled by a caller that
// changes its Node in place.
func TestTranslatorReuse(t *testing.T) {
	port := func(ip string, rules ...Rule) Port {
		return Port{Direction: Ingress, Endpoint: netip.MustParseAddr(ip), Port: 8080, Rules: rules}
	}
	rule := func(path string) Rule {
		return Rule{Peers: []netip.Prefix{netip.MustParsePrefix("10.2.0.1/32")}, HTTP: []HTTPRule{{Method: "GET", Path: path}}}
	}
	n := Node{ProxyPort: 15001, Ports: []Port{
		port("10.1.0.1", rule("/a/.*")),
		port("10.1.0.2", rule("/b/.*")),
		{Direction: Egress, Endpoint: netip.MustParseAddr("10.1.0.3"), Port: 8080, Rules: []Rule{rule("/c")}},
	}}
	tr := NewTranslator()
	var prev Resources
	step := func(what string, wantNewRoutes int, wantNewListener bool) {
		t.Helper()
		got, err := tr.Resources(n)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		fresh, err := n.Resources()
		if err != nil {
			t.Fatal(err)
		}
		checkSameBytes(t, fresh, got)
		if prev.Clusters != nil {
			newRoutes := 0
			for _, r := range got.Routes {
				if !slices.Contains(prev.Routes, r) {
					newRoutes++
				}
			}
			if newRoutes != wantNewRoutes {
				t.Errorf("%s: %d route configurations built again, want %d", what, newRoutes, wantNewRoutes)
			}
			if newListener := got.Listeners[0] != prev.Listeners[0]; newListener != wantNewListener {
				t.Errorf("%s: listener built again %v, want %v", what, newListener, wantNewListener)
			}
		}
		prev = got
	}
	step("first", 0, false)
	step("unchanged", 0, false)
	n.Ports[0].Rules[0].HTTP[0].Path = "/a/v2/.*"                       // in place
	step("one path", 2, false)                                          // its chain and the one it shares with the egress
	n.Ports[1].Rules[0].Peers[0] = netip.MustParsePrefix("10.2.0.9/32") // in place
	step("one peer", 2, false)
	n.Ports = append(n.Ports, port("10.1.0.4", rule("/d")))
	// The new ingress also gets a chain with the egress of 10.1.0.3.
	step("port added", 2, true)
	n.Ports = n.Ports[:3]
	step("port removed", 0, true)
	n.AccessLogCluster = "membrane-agent"
	step("access log", 0, true)
	if _, err := tr.Resources(Node{ProxyPort: 15001, Ports: []Port{port("10.1.0.1", Rule{HTTP: []HTTPRule{{Path: "("}}})}}); err == nil {
		t.Fatal("an invalid regex passed a Translator that had seen valid ones")
	}
	n.Ports[2].Rules[0].HTTP[0].Path = "/c/("
	if _, err := tr.Resources(n); err == nil || !strings.Contains(err.Error(), "ports[2].rules[0].http[0].path") {
		t.Fatalf("invalid regex in a known chain: %v", err)
	}
}

// TestRouteOrigins: each route configuration is about the origins of the
// rules of its sides.
func TestRouteOrigins(t *testing.T) {
	n := Node{ProxyPort: 15001, Ports: []Port{
		{Direction: Ingress, Endpoint: netip.MustParseAddr("10.1.0.1"), Port: 80, Origins: []string{"b", "a"}},
		{Direction: Ingress, Endpoint: netip.MustParseAddr("10.1.0.1"), Port: 80, Origins: []string{"a"}},
		{Direction: Egress, Endpoint: netip.MustParseAddr("10.1.0.2"), Port: 80, Origins: []string{"c"}},
		{Direction: Ingress, Endpoint: netip.MustParseAddr("10.1.0.1"), Port: 81},
	}}
	got := RouteOrigins(n)
	in80, eg80 := sharedLabel(Ingress, 80, []string{"a", "b"}), sharedLabel(Egress, 80, []string{"c"})
	want := map[string][]string{
		"ingress/" + in80 + ":80":                          {"a", "b"},
		"egress/" + eg80 + ":80":                           {"c"},
		"egress/" + eg80 + "+ingress/" + in80 + ":80":      {"a", "b", "c"},
		"ingress/" + sharedLabel(Ingress, 81, nil) + ":81": nil,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RouteOrigins (-want +got):\n%s", diff)
	}
	res, err := n.Resources()
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range res.Routes {
		if _, ok := got[rc.GetName()]; !ok {
			t.Errorf("route configuration %s has no origins entry", rc.GetName())
		}
	}
}

func TestResourcesErrors(t *testing.T) {
	ingress := func(rules ...Rule) Port {
		return Port{Direction: Ingress, Endpoint: netip.MustParseAddr("10.0.1.5"), Port: 80, Rules: rules}
	}
	okPort := ingress()
	for _, tc := range []struct {
		name string
		node Node
		want []string // substrings of the error
	}{
		{"proxy port 0", Node{Ports: []Port{okPort}}, []string{"proxyPort: must not be 0"}},
		{"port 0", Node{ProxyPort: 15001, Ports: []Port{okPort, {Direction: Egress, Endpoint: netip.MustParseAddr("10.0.1.5")}}},
			[]string{"ports[1].port: must not be 0"}},
		{"bad direction", Node{ProxyPort: 15001, Ports: []Port{{Direction: "inbound", Endpoint: netip.MustParseAddr("10.0.1.5"), Port: 80}}},
			[]string{`ports[0].direction: must be "ingress" or "egress", got "inbound"`}},
		{"missing endpoint", Node{ProxyPort: 15001, Ports: []Port{{Direction: Ingress, Port: 80}}},
			[]string{"ports[0].endpoint: missing or invalid address"}},
		{"ipv6 endpoint", Node{ProxyPort: 15001, Ports: []Port{{Direction: Ingress, Endpoint: netip.MustParseAddr("fd00::5"), Port: 80}}},
			[]string{"ports[0].endpoint: fd00::5: IPv6 is not supported yet"}},
		{"ipv6 peer", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{Peers: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/64")}})}},
			[]string{"ports[0].rules[0].peers[1]: fd00::: IPv6 is not supported yet"}},
		{"invalid peer", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{Peers: []netip.Prefix{{}}})}},
			[]string{"ports[0].rules[0].peers[0]: missing or invalid prefix"}},
		{"bad path regex", Node{ProxyPort: 15001, Ports: []Port{okPort, ingress(Rule{HTTP: []HTTPRule{{}, {}, {Path: "("}}})}},
			[]string{`ports[1].rules[0].http[2].path: invalid regex "(": `, "missing closing )"}},
		{"bad method and host regexes", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Method: "GET|*", Host: `a\`}}})}},
			[]string{`ports[0].rules[0].http[0].method: invalid regex "GET|*"`, `ports[0].rules[0].http[0].host: invalid regex "a\\"`}},
		{"perl-only regex", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Path: `/(?=x)`}}})}},
			[]string{`ports[0].rules[0].http[0].path: invalid regex "/(?=x)"`}},
		{"bad header name", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{}, Rule{HTTP: []HTTPRule{{Headers: []Header{{Name: "X-Ok"}, {Name: "Content Type"}}}}})}},
			[]string{`ports[0].rules[1].http[0].headers[1].name: invalid header name "Content Type"`}},
		{"pseudo-header", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Headers: []Header{{Name: ":path", Value: "/"}}}}})}},
			[]string{`ports[0].rules[0].http[0].headers[0].name: invalid header name ":path"`}},
		{"empty header name", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Headers: []Header{{Value: "x"}}}}})}},
			[]string{`ports[0].rules[0].http[0].headers[0].name: invalid header name ""`}},
		{"bad header value", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Headers: []Header{{Name: "X-A", Value: "a\r\nb"}}}}})}},
			[]string{`ports[0].rules[0].http[0].headers[0].value: invalid header value`}},
		{"every problem reported", Node{Ports: []Port{{Direction: Ingress, Endpoint: netip.MustParseAddr("10.0.1.5")}}},
			[]string{"proxyPort: must not be 0", "ports[0].port: must not be 0"}},
		{"bad group label", Node{ProxyPort: 15001, Ports: []Port{okPort}, GroupLabels: []GroupLabel{{Direction: Ingress, Port: 80, Label: "group-XYZ"}}},
			[]string{`groupLabels[0].label: "group-XYZ" is not "group-" and 12 hexadecimal digits`}},
		{"unsorted group origins", Node{ProxyPort: 15001, Ports: []Port{okPort}, GroupLabels: []GroupLabel{{Direction: Ingress, Port: 80, Origins: []string{"b", "a"}, Label: "group-000000000000"}}},
			[]string{"groupLabels[0].origins: must be sorted, without duplicates"}},
		{"one label, two groups", Node{ProxyPort: 15001, Ports: []Port{okPort}, GroupLabels: []GroupLabel{
			{Direction: Ingress, Port: 80, Origins: []string{"a"}, Label: "group-000000000000"},
			{Direction: Ingress, Port: 80, Origins: []string{"b"}, Label: "group-000000000000"}}},
			[]string{"groupLabels[1].label: a second label for the same group, or a label of two groups"}},
		{"a label taken by another group's digest", Node{ProxyPort: 15001, Ports: []Port{
			{Direction: Ingress, Endpoint: netip.MustParseAddr("10.0.1.5"), Port: 80, Origins: []string{"a"}},
			{Direction: Ingress, Endpoint: netip.MustParseAddr("10.0.1.6"), Port: 80, Origins: []string{"b"}}},
			GroupLabels: []GroupLabel{{Direction: Ingress, Port: 80, Origins: []string{"b"}, Label: sharedLabel(Ingress, 80, []string{"a"})}}},
			[]string{"groupLabels: two filter chains named ingress/" + sharedLabel(Ingress, 80, []string{"a"}) + ":80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.node.Resources()
			if err == nil {
				t.Fatalf("got no error, resources %v", res)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if len(res.Listeners) != 0 || len(res.Routes) != 0 || len(res.Clusters) != 0 {
				t.Errorf("got resources with an error: %v", res)
			}
		})
	}
}

func TestPlainMatchers(t *testing.T) {
	for _, tc := range []struct {
		re   string
		want []string // kind:value, nil for "regex"
	}{
		{"GET", []string{"exact:GET"}},
		{"/api/v1/items", []string{"exact:/api/v1/items"}},
		{`api\.example\.com`, []string{"exact:api.example.com"}},
		{`/a\+b`, []string{"exact:/a+b"}},
		{"GET|HEAD", []string{"exact:GET", "exact:HEAD"}},
		{"PUT|PATCH", []string{"exact:PATCH", "exact:PUT"}},
		{"(GET|POST)", []string{"exact:GET", "exact:POST"}},
		{"GE[TX]", []string{"exact:GET", "exact:GEX"}},
		{"/items/.*", []string{"prefix:/items/"}},
		{"(?s)/items/.*", []string{"prefix:/items/"}},
		{`.*\.example\.com`, []string{"suffix:.example.com"}},
		{".*admin.*", []string{"contains:admin"}},
		{"/(a|b)/.*", []string{"prefix:/a/", "prefix:/b/"}},
		{"/a/b(/x)?", []string{"exact:/a/b", "exact:/a/b/x"}},
		{"(?i)get", nil},
		{"x{3}", nil}, // repeats stay regexes
		{"/items/[0-9]+", nil},
		{"/items/[0-9]", nil}, // ten alternatives
		{"/a/.*/b", nil},
		{".*", nil},
		{"^GET$", nil},
		{"", nil},
		{"(", nil},
	} {
		var got []string
		for _, m := range plainMatchers(tc.re) {
			switch p := m.GetMatchPattern().(type) {
			case *matcherv3.StringMatcher_Exact:
				got = append(got, "exact:"+p.Exact)
			case *matcherv3.StringMatcher_Prefix:
				got = append(got, "prefix:"+p.Prefix)
			case *matcherv3.StringMatcher_Suffix:
				got = append(got, "suffix:"+p.Suffix)
			case *matcherv3.StringMatcher_Contains:
				got = append(got, "contains:"+p.Contains)
			default:
				t.Fatalf("%q: unexpected matcher %v", tc.re, m)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("plainMatchers(%q) = %q; want %q", tc.re, got, tc.want)
		}
		// What they match is what the regex matches whole.
		if got == nil {
			continue
		}
		full := regexp.MustCompile(`^(?:` + tc.re + `)$`)
		for _, v := range []string{"", "GET", "HEAD", "GEX", "PUT", "PATCH", "POST", "/api/v1/items", "/api/v1/items/", "api.example.com",
			"x.example.com", "/a+b", "/items/", "/items/5", "/admin/x", "admin", "/a/b", "/a/b/x", "/a/b/y", "/a/1", "/b/", "xxx", "xx"} {
			var any bool
			for _, m := range plainMatchers(tc.re) {
				switch p := m.GetMatchPattern().(type) {
				case *matcherv3.StringMatcher_Exact:
					any = any || v == p.Exact
				case *matcherv3.StringMatcher_Prefix:
					any = any || strings.HasPrefix(v, p.Prefix)
				case *matcherv3.StringMatcher_Suffix:
					any = any || strings.HasSuffix(v, p.Suffix)
				case *matcherv3.StringMatcher_Contains:
					any = any || strings.Contains(v, p.Contains)
				}
			}
			if any != full.MatchString(v) {
				t.Errorf("%q on %q: plain matchers say %v, the regex %v", tc.re, v, any, !any)
			}
		}
	}
}

// TestHTTPPermissions: the L7 path's matching for other translations: no
// rules allow every request, each rule is one OR-ed permission, and a bad
// rule is an error naming its field.
func TestHTTPPermissions(t *testing.T) {
	ps, err := HTTPPermissions(nil)
	if err != nil || len(ps) != 1 || !ps[0].GetAny() {
		t.Errorf("no rules: %v, %v", ps, err)
	}
	ps, err = HTTPPermissions([]HTTPRule{{Method: "GET"}, {Path: "/a/.*"}})
	if err != nil || len(ps) != 2 || ps[0].GetHeader().GetStringMatch().GetExact() != "GET" || ps[1].GetUrlPath().GetPath().GetPrefix() != "/a/" {
		t.Errorf("two rules: %v, %v", ps, err)
	}
	if _, err := HTTPPermissions([]HTTPRule{{}, {Path: "("}}); err == nil || !strings.HasPrefix(err.Error(), `http[1].path: invalid regex "("`) {
		t.Errorf("bad regex: %v", err)
	}
}

// TestPodsShareAChain: the pods whose rules on a port come from the same
// origins and are the same share one filter chain and route configuration;
// a pod joining them changes only the listener's matcher, a rule change
// only the route configuration; when their rules differ, each has its own.
func TestPodsShareAChain(t *testing.T) {
	rule := func(path string) Rule {
		return Rule{Peers: []netip.Prefix{netip.MustParsePrefix("10.2.0.1/32")}, HTTP: []HTTPRule{{Method: "GET", Path: path}}}
	}
	pod := func(ip string, rules ...Rule) Port {
		return Port{Direction: Ingress, Endpoint: netip.MustParseAddr(ip), Port: 8080, Rules: rules, Origins: []string{"MembraneNetworkPolicy shop/web"}}
	}
	shared := "ingress/" + sharedLabel(Ingress, 8080, []string{"MembraneNetworkPolicy shop/web"}) + ":8080"
	tr := NewTranslator()
	translate := func(what string, ports ...Port) Resources {
		t.Helper()
		res, err := tr.Resources(Node{ProxyPort: 15001, Ports: ports})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return res
	}
	chainNames := func(res Resources) []string {
		var out []string
		for _, fc := range res.Listeners[0].GetFilterChains() {
			out = append(out, fc.GetName())
		}
		return out
	}

	two := translate("two pods", pod("10.1.0.1", rule("/a")), pod("10.1.0.2", rule("/a")))
	if got := chainNames(two); !slices.Equal(got, []string{shared}) || len(two.Routes) != 1 || two.Routes[0].GetName() != shared {
		t.Fatalf("two pods with the same rules: chains %v, %d route configurations; want one, %s", got, len(two.Routes), shared)
	}
	three := translate("a third", pod("10.1.0.1", rule("/a")), pod("10.1.0.2", rule("/a")), pod("10.1.0.3", rule("/a")))
	if three.Routes[0] != two.Routes[0] {
		t.Error("a pod joining the group built its route configuration again")
	}
	if !proto.Equal(three.Listeners[0].GetFilterChains()[0], two.Listeners[0].GetFilterChains()[0]) {
		t.Error("a pod joining the group changed its filter chain (Envoy would drain its connections)")
	}
	if proto.Equal(three.Listeners[0].GetFilterChainMatcher(), two.Listeners[0].GetFilterChainMatcher()) {
		t.Error("a pod joining the group left the matcher as it was")
	}
	changed := translate("a rule change", pod("10.1.0.1", rule("/b")), pod("10.1.0.2", rule("/b")), pod("10.1.0.3", rule("/b")))
	if changed.Listeners[0] != three.Listeners[0] || changed.Routes[0] == three.Routes[0] || changed.Routes[0].GetName() != shared {
		t.Error("a rule change of the group: want the same listener and a new route configuration of the same name")
	}
	apart := translate("different rules", pod("10.1.0.1", rule("/b")), pod("10.1.0.2", rule("/b")), pod("10.1.0.3", rule("/c")))
	want := []string{"ingress/10.1.0.1:8080", "ingress/10.1.0.2:8080", "ingress/10.1.0.3:8080"}
	if got := chainNames(apart); !slices.Equal(got, want) || len(apart.Routes) != 3 {
		t.Errorf("pods with different rules: chains %v, %d route configurations; want %v", got, len(apart.Routes), want)
	}
}

// TestInheritLabels: a group keeps the label of the group it continues,
// so a policy joining or leaving the set of all of a group's pods changes
// its route configuration only: the filter chain stays byte-equal (Envoy
// drains none of its connections).
func TestInheritLabels(t *testing.T) {
	const a, b, c = "MembraneNetworkPolicy shop/a", "MembraneNetworkPolicy shop/b", "MembraneNetworkPolicy shop/c"
	pods := func(port uint16, origins []string, ips ...string) []Port {
		var out []Port
		for _, ip := range ips {
			out = append(out, Port{Direction: Ingress, Endpoint: netip.MustParseAddr(ip), Port: port, Origins: origins,
				Rules: []Rule{{HTTP: []HTTPRule{{Method: "GET", Path: "/" + strings.Join(origins, "")}}}}})
		}
		return out
	}
	digest := func(port uint16, origins ...string) string { return sharedLabel(Ingress, port, origins) }
	labelled := func(ports []Port, labels []GroupLabel) Node {
		return Node{ProxyPort: 15001, Ports: ports, GroupLabels: labels}
	}
	for _, tc := range []struct {
		name       string
		prev, next []Port
		prevLabels []GroupLabel
		want       map[string]string // group origins joined by "+" → label
	}{
		{name: "a policy joins all pods", prev: pods(80, []string{a}, "10.0.0.1", "10.0.0.2"),
			next: pods(80, []string{a, b}, "10.0.0.1", "10.0.0.2"),
			want: map[string]string{a + "+" + b: digest(80, a)}},
		{name: "it leaves again", prev: pods(80, []string{a, b}, "10.0.0.1", "10.0.0.2"),
			prevLabels: []GroupLabel{{Ingress, 80, []string{a, b}, digest(80, a)}},
			next:       pods(80, []string{a}, "10.0.0.1", "10.0.0.2"),
			want:       map[string]string{a: digest(80, a)}},
		{name: "a policy joins half: the pods that move get a new chain", prev: pods(80, []string{a}, "10.0.0.1", "10.0.0.2"),
			next: slices.Concat(pods(80, []string{a, b}, "10.0.0.1"), pods(80, []string{a}, "10.0.0.2")),
			want: map[string]string{a: digest(80, a), a + "+" + b: digest(80, a, b)}},
		{name: "the group sharing most pods inherits", prev: pods(80, []string{a}, "10.0.0.1", "10.0.0.2", "10.0.0.3"),
			next: slices.Concat(pods(80, []string{a, c}, "10.0.0.1"), pods(80, []string{a, b}, "10.0.0.2", "10.0.0.3")),
			want: map[string]string{a + "+" + b: digest(80, a), a + "+" + c: digest(80, a, c)}},
		{name: "no pod in common", prev: pods(80, []string{a}, "10.0.0.1"),
			next: pods(80, []string{b}, "10.0.0.2"),
			want: map[string]string{b: digest(80, b)}},
		{name: "another port", prev: pods(80, []string{a}, "10.0.0.1"),
			next: pods(81, []string{a, b}, "10.0.0.1"),
			want: map[string]string{a + "+" + b: digest(81, a, b)}},
		{name: "a group comes back while its digest is taken", prev: pods(80, []string{a, b}, "10.0.0.1"),
			prevLabels: []GroupLabel{{Ingress, 80, []string{a, b}, digest(80, a)}},
			next:       slices.Concat(pods(80, []string{a, b}, "10.0.0.1"), pods(80, []string{a}, "10.0.0.2")),
			want:       map[string]string{a + "+" + b: digest(80, a), a: sharedLabel(Ingress, 80, []string{a, "#1"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := labelled(tc.prev, tc.prevLabels)
			next := labelled(tc.next, InheritLabels(Groups(prev), labelled(tc.next, nil)))
			got := map[string]string{}
			for _, g := range Groups(next) {
				got[strings.Join(g.Origins, "+")] = g.Label
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("labels %v, want %v", got, tc.want)
			}
			for _, gl := range next.GroupLabels {
				if gl.Label == sharedLabel(gl.Direction, gl.Port, gl.Origins) {
					t.Errorf("%v: a label a digest gives anyway", gl)
				}
			}
			before, err := prev.Resources()
			if err != nil {
				t.Fatal(err)
			}
			after, err := next.Resources()
			if err != nil {
				t.Fatal(err)
			}
			// A chain of the same name is byte-equal: Envoy keeps it.
			kept := 0
			for _, fa := range after.Listeners[0].GetFilterChains() {
				for _, fb := range before.Listeners[0].GetFilterChains() {
					if fa.GetName() == fb.GetName() {
						kept++
						if !proto.Equal(fa, fb) {
							t.Errorf("chain %s changed", fa.GetName())
						}
					}
				}
			}
			if tc.name == "a policy joins all pods" && kept != 1 {
				t.Errorf("%d chains kept, want 1", kept)
			}
		})
	}
}

// TestValidateGroups: groups read back from a file are refused where
// InheritLabels could label two groups of a node alike.
func TestValidateGroups(t *testing.T) {
	const a, b = "MembraneNetworkPolicy shop/a", "MembraneNetworkPolicy shop/b"
	ok := func() []Group {
		return []Group{
			{GroupLabel{Ingress, 80, []string{a, b}, sharedLabel(Ingress, 80, []string{a})}, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}},
			{GroupLabel{Ingress, 81, []string{a}, sharedLabel(Ingress, 80, []string{a})}, nil},
		}
	}
	if err := ValidateGroups(ok()); err != nil {
		t.Fatalf("valid groups: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(gs []Group) []Group
		want   string
	}{
		{"a label of two groups", func(gs []Group) []Group { gs[1].Port = 80; return gs }, "groups[1].label: a second label"},
		{"a group labelled twice", func(gs []Group) []Group {
			return append(gs, Group{GroupLabel{Ingress, 81, []string{a}, sharedLabel(Ingress, 81, []string{b})}, nil})
		}, "groups[2].label: a second label"},
		{"a malformed label", func(gs []Group) []Group { gs[0].Label = "group-XYZ"; return gs }, `groups[0].label: "group-XYZ" is not`},
		{"unsorted origins", func(gs []Group) []Group { gs[0].Origins = []string{b, a}; return gs }, "groups[0].origins: must be sorted"},
		{"a direction", func(gs []Group) []Group { gs[1].Direction = "sideways"; return gs }, `groups[1].direction: must be "ingress" or "egress"`},
		{"unsorted endpoints", func(gs []Group) []Group { slices.Reverse(gs[0].Endpoints); return gs }, "groups[0].endpoints: must be sorted"},
		{"an invalid endpoint", func(gs []Group) []Group { gs[1].Endpoints = []netip.Addr{{}}; return gs }, "groups[1].endpoints[0]: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateGroups(tc.change(ok()))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestSelectChain: the matcher selects the chain of both sides for a
// connection between a pod with egress rules and one with ingress rules,
// else the chain of the side that has rules, and none for the rest.
func TestSelectChain(t *testing.T) {
	rule := Rule{HTTP: []HTTPRule{{Method: "GET"}}}
	port := func(dir Direction, ip, origin string) Port {
		return Port{Direction: dir, Endpoint: netip.MustParseAddr(ip), Port: 8080, Rules: []Rule{rule}, Origins: []string{origin}}
	}
	res, err := Node{ProxyPort: 15001, Ports: []Port{
		port(Ingress, "10.0.1.5", "p"), port(Ingress, "10.0.1.7", "p"), port(Egress, "10.0.1.6", "q"),
	}}.Resources()
	if err != nil {
		t.Fatal(err)
	}
	in, eg := "ingress/"+sharedLabel(Ingress, 8080, []string{"p"}), "egress/"+sharedLabel(Egress, 8080, []string{"q"})
	for _, tc := range []struct {
		src, dst string
		port     uint16
		want     string
	}{
		{"10.0.1.6", "10.0.1.5", 8080, eg + "+" + in + ":8080"},
		{"10.0.1.6", "10.0.1.7", 8080, eg + "+" + in + ":8080"},
		{"10.0.2.9", "10.0.1.5", 8080, in + ":8080"},
		{"10.0.1.6", "10.0.2.9", 8080, eg + ":8080"},
		{"10.0.2.9", "10.0.2.8", 8080, ""},
		{"10.0.1.6", "10.0.1.5", 9090, ""},
	} {
		got, err := SelectChain(res.Listeners[0], netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst), tc.port)
		if err != nil || got != tc.want {
			t.Errorf("%s -> %s:%d: chain %q (%v), want %q", tc.src, tc.dst, tc.port, got, err, tc.want)
		}
	}
	names := map[string]bool{}
	for _, fc := range res.Listeners[0].GetFilterChains() {
		names[fc.GetName()] = true
	}
	if len(names) != 3 {
		t.Errorf("filter chains %v: want the ingress, the egress and the combined one", names)
	}
}

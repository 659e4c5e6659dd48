package nack

import (
	"net/netip"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/membrane-mesh/membrane/gateway/ir"
	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

func route(name, path string) ir.Route {
	return ir.Route{Name: name, Match: ir.Match{PathType: ir.PathPrefix, Path: path}, DirectResponse: 200}
}

func render(t *testing.T, l ir.Listener) translate.Resources {
	t.Helper()
	res, err := translate.Render(ir.IR{Listeners: []ir.Listener{l}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAttribute(t *testing.T) {
	addr := netip.MustParseAddr("10.0.0.1")
	http := func(paths ...string) ir.Listener {
		var routes []ir.Route
		for i, p := range paths {
			routes = append(routes, route("ns/r/rule/"+string(rune('0'+i))+"/match/0", p))
		}
		return ir.Listener{Name: "ns/gw/80", Address: addr, Port: 80, Protocol: ir.HTTP,
			Servers: []ir.Server{{Name: "ns/gw/80", VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"}, Routes: routes}}}}}
	}
	server := func(name, key, path string) ir.Server {
		return ir.Server{Name: "ns/gw/" + name, SNI: []string{name + ".example"}, Certificates: []ir.Certificate{{Name: "ns/" + name, Chain: []byte("chain"), Key: []byte(key)}},
			VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"}, Routes: []ir.Route{route("ns/r2/rule/0/match/0", path)}}}}
	}
	https := func(servers ...ir.Server) ir.Listener {
		return ir.Listener{Name: "ns/gw/443", Address: addr, Port: 443, Protocol: ir.HTTPS, Servers: servers}
	}
	// checking clients with the CA bundle ca of the Gateway's port.
	checking := func(s ir.Server, ca string, optional bool) ir.Server {
		s.ClientValidation = &ir.ClientValidation{Name: "ns/gw/443", CA: []byte(ca), Optional: optional}
		return s
	}
	for _, c := range []struct {
		name             string
		running, refused ir.Listener
		new              bool
		listeners, rules []string
	}{
		{name: "an HTTP rule changed", running: http("/a", "/b"), refused: http("/a", "/c"), rules: []string{"ns/r/rule/1"}},
		{name: "a rule added", running: http("/a"), refused: http("/a", "/c"), rules: []string{"ns/r/rule/1"}},
		{name: "one HTTPS listener's certificate", running: https(server("one", "k", "/"), server("two", "k", "/")),
			refused: https(server("one", "k", "/"), server("two", "bad", "/")), listeners: []string{"two"}},
		{name: "one HTTPS listener's rule", running: https(server("one", "k", "/"), server("two", "k", "/")),
			refused: https(server("one", "k", "/x"), server("two", "k", "/")), listeners: []string{"one"}, rules: []string{"ns/r2/rule/0"}},
		{name: "a new HTTPS listener", running: https(server("one", "k", "/")),
			refused: https(server("one", "k", "/"), server("two", "bad", "/")), listeners: []string{"two"}},
		{name: "a client CA bundle", running: https(server("one", "k", "/"), checking(server("two", "k", "/"), "ca", false)),
			refused: https(server("one", "k", "/"), checking(server("two", "k", "/"), "bad", false)), listeners: []string{"two"}},
		{name: "an optional client CA bundle", running: https(checking(server("one", "k", "/"), "ca", true), server("two", "k", "/")),
			refused: https(checking(server("one", "k", "/"), "bad", true), server("two", "k", "/")), listeners: []string{"one"}},
		{name: "a new Envoy listener", new: true, refused: https(server("one", "k", "/"), server("two", "k", "/")), listeners: []string{"one", "two"}},
		{name: "a UDP listener: every listener of the port", new: true, refused: ir.Listener{Name: "ns/gw/53/udp", Address: addr, Port: 53, Protocol: ir.UDP,
			Servers: []ir.Server{{Name: "ns/gw/dns", Backends: []ir.Backend{{Cluster: "ns/dns/53/udp", Weight: 1}}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// What Envoy refuses: the listener if it changed, else the
			// route configuration (RDS) or the certificate (SDS) that did.
			refused := render(t, c.refused)
			var got v1alpha1.GatewayRejection
			var err error
			if c.new {
				got, err = Attribute(refused.Listeners[0], nil, "envoy's error")
			} else if running := render(t, c.running); !proto.Equal(running.Listeners[0], refused.Listeners[0]) {
				got, err = Attribute(refused.Listeners[0], running.Listeners[0], "envoy's error")
			} else {
				old := map[string]*routev3.RouteConfiguration{}
				for _, rc := range running.Routes {
					old[rc.GetName()] = rc
				}
				oldSecrets := map[string]*tlsv3.Secret{}
				for _, sec := range running.Secrets {
					oldSecrets[sec.GetName()] = sec
				}
				if i := slices.IndexFunc(refused.Routes, func(rc *routev3.RouteConfiguration) bool { return !proto.Equal(old[rc.GetName()], rc) }); i >= 0 {
					got, err = AttributeRoutes(refused.Routes[i], old[refused.Routes[i].GetName()], "envoy's error")
				} else if i := slices.IndexFunc(refused.Secrets, func(s *tlsv3.Secret) bool { return !proto.Equal(oldSecrets[s.GetName()], s) }); i >= 0 {
					// A certificate or CA bundle comes over SDS.
					var all []v1alpha1.GatewayRejection
					all, err = AttributeSecret(refused.Secrets[i].GetName(), refused.Listeners, "envoy's error")
					if len(all) != 1 {
						t.Fatalf("%d rejections %+v, want one", len(all), all)
					}
					got = all[0]
				} else {
					t.Fatal("neither the listener nor a route configuration nor a certificate changed")
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Namespace != "ns" || got.Name != "gw" || got.Port != int32(c.refused.Port) || got.Error != "envoy's error" ||
				!slices.Equal(got.Listeners, c.listeners) || !slices.Equal(got.Rules, c.rules) {
				t.Errorf("got %+v, want listeners %v rules %v", got, c.listeners, c.rules)
			}
		})
	}
	if _, err := Attribute(&listenerv3.Listener{Name: "ingress/10.0.0.5:8080"}, nil, ""); err == nil {
		t.Error("a policy listener is attributed to a Gateway")
	}
	if _, err := AttributeRoutes(&routev3.RouteConfiguration{Name: "ingress/10.0.0.5:8080"}, nil, ""); err == nil {
		t.Error("a policy route configuration is attributed to a Gateway")
	}
	if _, err := AttributeSecret("spiffe://cluster.local/ns/shop/sa/web", nil, ""); err == nil {
		t.Error("a workload's SVID is attributed to a Gateway")
	}
}

// TestAttributeCA: a refused BackendTLSPolicy CA bundle names the route
// rules that send requests to (or mirror them to) a backend verified with
// it, per route configuration; other bundles and rules are not named.
func TestAttributeCA(t *testing.T) {
	addr := netip.MustParseAddr("10.0.0.1")
	tlsTo := func(name, policy string) ir.Cluster {
		return ir.Cluster{Name: name, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.1.0.5:8443")},
			TLS: &ir.UpstreamTLS{SNI: "b.example", CAName: policy, CA: []byte("ca")}}
	}
	to := func(name, path string, clusters ...string) ir.Route {
		r := ir.Route{Name: name, Match: ir.Match{PathType: ir.PathPrefix, Path: path}}
		for _, c := range clusters {
			r.Backends = append(r.Backends, ir.Backend{Cluster: c, Weight: 1})
		}
		return r
	}
	mirrored := to("ns/r/rule/3/match/0", "/m", "ns/plain/80")
	mirrored.Mirrors = []ir.Mirror{{Cluster: "ns/secure/443", Percent: 100}}
	http := ir.Listener{Name: "ns/gw/80", Address: addr, Port: 80, Protocol: ir.HTTP,
		Servers: []ir.Server{{Name: "ns/gw/80", VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"}, Routes: []ir.Route{
			to("ns/r/rule/0/match/0", "/s", "ns/secure/443"),
			to("ns/r/rule/0/match/1", "/s2", "ns/secure/443"),
			to("ns/r/rule/1/match/0", "/p", "ns/plain/80"),
			to("ns/r/rule/2/match/0", "/w", "ns/plain/80", "ns/secure/443"),
			mirrored,
			to("ns/r/rule/4/match/0", "/o", "ns/other/443"),
		}}}}}}
	res, err := translate.Render(ir.IR{Listeners: []ir.Listener{http}, Clusters: []ir.Cluster{
		{Name: "ns/plain/80", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.1.0.6:80")}},
		tlsTo("ns/secure/443", "ns/policy"), tlsTo("ns/other/443", "ns/other-policy"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := AttributeCA(translate.CAPrefix+"ns/policy", res.Clusters, res.Routes, "bad CA")
	if err != nil {
		t.Fatal(err)
	}
	want := []v1alpha1.GatewayRejection{{Namespace: "ns", Name: "gw", Port: 80, Error: "bad CA",
		Rules: []string{"ns/r/rule/0", "ns/r/rule/2", "ns/r/rule/3"}}}
	if !slices.EqualFunc(got, want, func(a, b v1alpha1.GatewayRejection) bool {
		return a.Namespace == b.Namespace && a.Name == b.Name && a.Port == b.Port && a.Error == b.Error &&
			slices.Equal(a.Listeners, b.Listeners) && slices.Equal(a.Rules, b.Rules)
	}) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, err := AttributeCA(translate.CAPrefix+"ns/unused", res.Clusters, res.Routes, "bad CA"); err != nil || len(got) != 0 {
		t.Errorf("a bundle no cluster uses: %+v, %v; want nothing", got, err)
	}
	if _, err := AttributeCA(translate.CertificatePrefix+"ns/policy", res.Clusters, res.Routes, "bad CA"); err == nil {
		t.Errorf("a certificate's name: no error")
	}
}

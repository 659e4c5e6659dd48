package nack

import (
	"net/netip"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/membrane-mesh/membrane/gateway/ir"
	"github.com/membrane-mesh/membrane/gateway/translate"
)

func route(name, path string) ir.Route {
	return ir.Route{Name: name, Match: ir.Match{PathType: ir.PathPrefix, Path: path}, DirectResponse: 200}
}

func render(t *testing.T, l ir.Listener) *listenerv3.Listener {
	t.Helper()
	res, err := translate.Render(ir.IR{Listeners: []ir.Listener{l}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Listeners[0]
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
		return ir.Server{Name: "ns/gw/" + name, SNI: []string{name + ".example"}, Certificates: []ir.Certificate{{Name: "ns/s", Chain: []byte("chain"), Key: []byte(key)}},
			VirtualHosts: []ir.VirtualHost{{Name: "a", Domains: []string{"*"}, Routes: []ir.Route{route("ns/r2/rule/0/match/0", path)}}}}
	}
	https := func(servers ...ir.Server) ir.Listener {
		return ir.Listener{Name: "ns/gw/443", Address: addr, Port: 443, Protocol: ir.HTTPS, Servers: servers}
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
		{name: "a new Envoy listener", new: true, refused: https(server("one", "k", "/"), server("two", "k", "/")), listeners: []string{"one", "two"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var running *listenerv3.Listener
			if !c.new {
				running = render(t, c.running)
			}
			got, err := Attribute(render(t, c.refused), running, "envoy's error")
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
}

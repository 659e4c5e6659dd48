package translate

import (
	"testing"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// TestWithRedirectPort: the port Gateway API derives, left out of the
// Location where it is the scheme's well-known one and Envoy can leave it
// out (it writes a named host without a port, and drops the request's
// well-known port on a scheme change; under a wildcard it would keep any
// other port of the request's host).
func TestWithRedirectPort(t *testing.T) {
	for _, tc := range []struct {
		name           string
		redirect       ir.Redirect
		scheme, domain string
		port           uint16
		want           ir.Redirect
	}{
		{"to https, one name", ir.Redirect{Scheme: "https"}, "http", "shop.example.com", 80,
			ir.Redirect{Scheme: "https", Hostname: "shop.example.com"}},
		{"to https, one name, listener on 8080", ir.Redirect{Scheme: "https"}, "http", "shop.example.com", 8080,
			ir.Redirect{Scheme: "https", Hostname: "shop.example.com"}},
		{"to https, wildcard, listener on 80", ir.Redirect{Scheme: "https"}, "http", "*.example.com", 80,
			ir.Redirect{Scheme: "https"}},
		{"to https, wildcard, listener on 8080", ir.Redirect{Scheme: "https"}, "http", "*", 8080,
			ir.Redirect{Scheme: "https", Port: 443}},
		{"to https on 8443", ir.Redirect{Scheme: "https", Port: 8443}, "http", "shop.example.com", 80,
			ir.Redirect{Scheme: "https", Port: 8443}},
		{"explicit 443, named host", ir.Redirect{Scheme: "https", Hostname: "new.example.com", Port: 443}, "http", "*", 8080,
			ir.Redirect{Scheme: "https", Hostname: "new.example.com"}},
		{"same scheme, listener on 80, wildcard", ir.Redirect{}, "http", "*", 80, ir.Redirect{}},
		{"same scheme, listener on 8080", ir.Redirect{}, "http", "shop.example.com", 8080, ir.Redirect{Port: 8080}},
		{"same scheme, https listener on 443", ir.Redirect{}, "https", "shop.example.com", 443,
			ir.Redirect{Hostname: "shop.example.com"}},
		{"to http from an https listener, wildcard", ir.Redirect{Scheme: "http"}, "https", "*", 443, ir.Redirect{Scheme: "http"}},
		{"to http from an https listener on 8443, wildcard", ir.Redirect{Scheme: "http"}, "https", "*", 8443,
			ir.Redirect{Scheme: "http", Port: 80}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := tc.redirect
			got := withRedirectPort(ir.Route{Redirect: &rd}, tc.scheme, tc.port, tc.domain)
			if *got.Redirect != tc.want {
				t.Errorf("redirect %+v, want %+v", *got.Redirect, tc.want)
			}
			if rd != tc.redirect {
				t.Errorf("the route's redirect changed to %+v", rd)
			}
		})
	}
	if r := withRedirectPort(ir.Route{}, "http", 80, "*"); r.Redirect != nil {
		t.Errorf("a route without a redirect got %+v", r.Redirect)
	}
}

package flow

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFromHTTPLog(t *testing.T) {
	world := Endpoint{Identity: 2, Entity: "world", Labels: []string{"reserved:world"}}
	// The enricher resolves the world's addresses to the world identity, as
	// the agent's ipcache does.
	enrich := MapEnricher{frontendIP: frontend, backendIP: backend, externalIP: {Identity: 2}}
	get := HTTPLog{Time: t0, Source: frontendSrc, Destination: backendDst, Direction: Ingress,
		Protocol: "HTTP/1.1", Method: "GET", Host: "backend:8080", Path: "/api/v1/payments/P123", Code: 200,
		Duration: 23 * time.Millisecond}
	tcp := L4{Protocol: TCP, SourcePort: 43210, DestinationPort: 8080}
	ip := IP{Source: frontendIP, Destination: backendIP}
	for _, tc := range []struct {
		name   string
		log    HTTPLog
		enrich Enricher
		want   Flow
	}{{
		name: "forwarded", log: get, enrich: enrich,
		want: Flow{Time: t0.Add(23 * time.Millisecond), Node: "node-1", Type: TypeL7, Verdict: Forwarded, Direction: Ingress,
			IP: ip, L4: tcp, Source: frontend, Destination: backend,
			L7: &L7{Type: L7Response, Latency: 23 * time.Millisecond,
				HTTP: &HTTP{Protocol: "HTTP/1.1", Method: "GET", Host: "backend:8080", Path: "/api/v1/payments/P123", Code: 200}}},
	}, {
		name: "denied by the L7 policy",
		log: HTTPLog{Time: t0, Source: frontendSrc, Destination: backendDst, Direction: Ingress,
			Protocol: "HTTP/1.1", Method: "DELETE", Host: "backend:8080", Path: "/api/v1/payments/123", Code: 403, Denied: true},
		enrich: enrich,
		want: Flow{Time: t0, Node: "node-1", Type: TypeL7, Verdict: Dropped,
			DropReason: &DropReason{Code: 133, Name: "POLICY_DENIED", Description: "L7 policy denied"},
			Direction:  Ingress, IP: ip, L4: tcp, Source: frontend, Destination: backend,
			L7: &L7{Type: L7Response,
				HTTP: &HTTP{Protocol: "HTTP/1.1", Method: "DELETE", Host: "backend:8080", Path: "/api/v1/payments/123", Code: 403}}},
	}, {
		name: "egress to the world, IPv4-mapped addresses (a dual-stack listener)",
		log: HTTPLog{Time: t0, Source: netip.MustParseAddrPort("[::ffff:10.244.1.7]:43210"),
			Destination: netip.MustParseAddrPort("[::ffff:203.0.113.5]:80"), Direction: Egress,
			Protocol: "HTTP/2", Method: "POST", Host: "api.example.com", Path: "/v1/charge", Code: 503, Duration: 10 * time.Second},
		enrich: enrich,
		want: Flow{Time: t0.Add(10 * time.Second), Node: "node-1", Type: TypeL7, Verdict: Forwarded, Direction: Egress,
			IP: IP{Source: frontendIP, Destination: externalIP}, L4: L4{Protocol: TCP, SourcePort: 43210, DestinationPort: 80},
			Source: frontend, Destination: world,
			L7: &L7{Type: L7Response, Latency: 10 * time.Second,
				HTTP: &HTTP{Protocol: "HTTP/2", Method: "POST", Host: "api.example.com", Path: "/v1/charge", Code: 503}}},
	}, {
		name: "no enricher", log: get,
		want: Flow{Time: t0.Add(23 * time.Millisecond), Node: "node-1", Type: TypeL7, Verdict: Forwarded, Direction: Ingress,
			IP: ip, L4: tcp,
			L7: &L7{Type: L7Response, Latency: 23 * time.Millisecond,
				HTTP: &HTTP{Protocol: "HTTP/1.1", Method: "GET", Host: "backend:8080", Path: "/api/v1/payments/P123", Code: 200}}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := FromHTTPLog(tc.log, "node-1", tc.enrich)
			if diff := cmp.Diff(tc.want, got, cmpAddr); diff != "" {
				t.Errorf("FromHTTPLog (-want +got):\n%s", diff)
			}
		})
	}
}

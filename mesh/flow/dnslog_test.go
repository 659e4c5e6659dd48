package flow

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

func TestFromDNSLogAndFilter(t *testing.T) {
	server := netip.AddrPortFrom(backendIP, 53)
	refused := DNSLog{Time: t0, Source: frontendSrc, Destination: server, Protocol: UDP,
		Query: "other.example.com.", QTypes: []string{"A"}, RCode: "REFUSED", Verdict: Dropped,
		Reason: "DNS query refused by policy", Duration: time.Millisecond}
	f := FromDNSLog(refused, "node-1", MapEnricher{frontendIP: frontend, backendIP: backend})
	want := Flow{Time: t0.Add(time.Millisecond), Node: "node-1", Type: TypeL7, Verdict: Dropped,
		DropReason: DNSPolicyDenied(), Direction: Egress,
		IP:     IP{Source: frontendIP, Destination: server.Addr()},
		L4:     L4{Protocol: UDP, SourcePort: frontendSrc.Port(), DestinationPort: 53},
		Source: frontend, Destination: backend,
		L7: &L7{Type: L7Response, Latency: time.Millisecond,
			DNS: &DNS{Query: "other.example.com.", QTypes: []string{"A"}, RCode: "REFUSED", ObservationSource: "proxy"}}}
	if diff := cmp.Diff(want, f, cmpAddr); diff != "" {
		t.Errorf("FromDNSLog (-want +got):\n%s", diff)
	}
	var flt Filter
	if err := flt.Set(KeyProtocol, "dns"); err != nil {
		t.Fatal(err)
	}
	if !flt.Match(&f) {
		t.Error("--protocol dns does not match a DNS flow")
	}
	http := Flow{Type: TypeL7, L7: &L7{HTTP: &HTTP{Method: "GET"}}}
	if flt.Match(&http) {
		t.Error("--protocol dns matches an HTTP flow")
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.observe(&f)
	if got := metricValue(t, reg, `membrane_dns_requests_total{rcode="REFUSED",verdict="DROPPED"}`); got != 1 {
		t.Errorf("membrane_dns_requests_total{rcode=REFUSED,verdict=DROPPED} = %v, want 1", got)
	}
}

package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/dnsproxy"
	"github.com/membrane-mesh/membrane/mesh/fqdn"
	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

var (
	dnsTestPod    = netip.MustParseAddr("10.244.0.3")
	dnsTestPlain  = netip.MustParseAddr("10.244.0.4") // a pod without DNS rules
	dnsTestServer = netip.MustParseAddr("10.244.0.2") // kube-dns, identity 257
	dnsTestOther  = netip.MustParseAddr("10.244.0.9") // another server, identity 300
)

// newTestDNSPolicy is a dnsPolicy over endpoints whose regeneration loop
// only counts regenerations.
func newTestDNSPolicy(t *testing.T) (*dnsPolicy, *int) {
	t.Helper()
	eps := &endpoints{
		requests: make(chan chan struct{}),
		byIP: map[netip.Addr]policy.Result{
			dnsTestPod: {
				EnforceEgress: true,
				DNS: []policy.DNSRule{{Direction: policy.Egress, Proto: policy.UDP, Port: 53, RemoteIdentities: []identity.ID{257},
					Names: []policy.FQDN{{MatchPattern: "**.cluster.local"}, {MatchName: "api.example.com"}}}},
				FQDNSelectors: []policy.FQDN{{MatchName: "api.example.com"}},
			},
			dnsTestPlain: {},
		},
		ipc: ipcache.Map{
			netip.MustParsePrefix("0.0.0.0/0"):     identity.World,
			netip.PrefixFrom(dnsTestServer, 32):    257,
			netip.PrefixFrom(dnsTestOther, 32):     300,
			netip.MustParsePrefix("10.244.0.0/16"): 999,
		},
	}
	regenerations := 0
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for {
			select {
			case w := <-eps.requests:
				regenerations++
				close(w)
			case <-ctx.Done():
				return
			}
		}
	}()
	ready := make(chan struct{})
	close(ready)
	d := &dnsPolicy{log: slog.New(slog.DiscardHandler), cache: fqdn.New(fqdn.Config{}), eps: eps, ready: ready,
		matchers: map[policy.FQDN]matchpattern.Matcher{}}
	return d, &regenerations
}

func TestDNSPolicyAllowed(t *testing.T) {
	d, _ := newTestDNSPolicy(t)
	req := func(src, server netip.Addr, proto, name string) dnsproxy.Request {
		return dnsproxy.Request{Source: netip.AddrPortFrom(src, 40000), Server: netip.AddrPortFrom(server, 53), Protocol: proto, Name: name}
	}
	for _, tc := range []struct {
		what string
		r    dnsproxy.Request
		want bool
	}{
		{"a cluster name", req(dnsTestPod, dnsTestServer, dnsproxy.UDP, "backend.default.svc.cluster.local."), true},
		{"the named name", req(dnsTestPod, dnsTestServer, dnsproxy.UDP, "API.example.com."), true},
		{"another name", req(dnsTestPod, dnsTestServer, dnsproxy.UDP, "other.example.com."), false},
		{"over TCP, which the rule does not cover", req(dnsTestPod, dnsTestServer, dnsproxy.TCP, "api.example.com."), false},
		{"another server", req(dnsTestPod, dnsTestOther, dnsproxy.UDP, "api.example.com."), false},
		{"a pod without DNS rules", req(dnsTestPlain, dnsTestServer, dnsproxy.UDP, "other.example.com."), true},
		{"an unknown source", req(netip.MustParseAddr("10.244.0.77"), dnsTestServer, dnsproxy.UDP, "api.example.com."), false},
	} {
		if got := d.Allowed(t.Context(), tc.r); got != tc.want {
			t.Errorf("%s: Allowed = %v, want %v", tc.what, got, tc.want)
		}
	}
}

func TestDNSPolicyLearned(t *testing.T) {
	d, regenerations := newTestDNSPolicy(t)
	ip := netip.MustParseAddr("198.19.1.11")
	answer := func(src netip.Addr, name string, ips ...netip.Addr) dnsproxy.Answer {
		return dnsproxy.Answer{Request: dnsproxy.Request{Source: netip.AddrPortFrom(src, 40000), Server: netip.AddrPortFrom(dnsTestServer, 53), Name: name},
			IPs: ips, TTL: 30 * time.Second}
	}
	// Names no toFQDNs of the pod selects, and pods without any, teach nothing.
	for _, a := range []dnsproxy.Answer{answer(dnsTestPod, "other.example.com.", ip), answer(dnsTestPlain, "api.example.com.", ip)} {
		if err := d.Learned(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.cache.Snapshot(); len(got) != 0 || *regenerations != 0 {
		t.Fatalf("learned %v with %d regenerations, want nothing", got, *regenerations)
	}
	// A selected name: learned, and programmed before Learned returns.
	if err := d.Learned(t.Context(), answer(dnsTestPod, "api.example.com.", ip, netip.MustParseAddr("2001:db8::1"))); err != nil {
		t.Fatal(err)
	}
	if *regenerations != 1 {
		t.Errorf("%d regenerations, want 1", *regenerations)
	}
	names := d.names()
	if len(names) != 1 || names[0].Name != "api.example.com." || len(names[0].IPs) != 1 || names[0].IPs[0] != ip {
		t.Errorf("names %+v, want api.example.com. -> %s (IPv4 only)", names, ip)
	}
	// The same answer again renews the entry without a regeneration.
	if err := d.Learned(t.Context(), answer(dnsTestPod, "api.example.com.", ip)); err != nil {
		t.Fatal(err)
	}
	if *regenerations != 1 {
		t.Errorf("%d regenerations after a renewal, want 1", *regenerations)
	}
}

func TestConnLive(t *testing.T) {
	for _, tc := range []struct {
		what string
		c    bpfpolicy.Conn
		want bool
	}{
		{"established TCP", bpfpolicy.Conn{Proto: bpfpolicy.TCP, OrigFlags: bpfpolicy.SYN | bpfpolicy.ACK, ReplyFlags: bpfpolicy.SYN | bpfpolicy.ACK, ReplySeen: true, Idle: time.Hour}, true},
		{"TCP closed both ways", bpfpolicy.Conn{Proto: bpfpolicy.TCP, OrigFlags: bpfpolicy.FIN | bpfpolicy.ACK, ReplyFlags: bpfpolicy.FIN | bpfpolicy.ACK, ReplySeen: true}, false},
		{"TCP reset", bpfpolicy.Conn{Proto: bpfpolicy.TCP, ReplyFlags: bpfpolicy.RST, ReplySeen: true}, false},
		{"TCP half closed", bpfpolicy.Conn{Proto: bpfpolicy.TCP, OrigFlags: bpfpolicy.FIN, ReplySeen: true}, true},
		{"unanswered SYN, old", bpfpolicy.Conn{Proto: bpfpolicy.TCP, OrigFlags: bpfpolicy.SYN, Idle: time.Minute}, false},
		{"UDP, recent", bpfpolicy.Conn{Proto: bpfpolicy.UDP, Idle: time.Second}, true},
		{"UDP, idle past its lifetime", bpfpolicy.Conn{Proto: bpfpolicy.UDP, Idle: 2 * time.Minute}, false},
	} {
		if got := connLive(tc.c); got != tc.want {
			t.Errorf("%s: connLive = %v, want %v", tc.what, got, tc.want)
		}
	}
}

func TestSelectorsSince(t *testing.T) {
	pol := func(sels ...policy.FQDN) []policy.Policy {
		return []policy.Policy{{Name: "p", Rules: []policy.Rule{{Egress: []policy.PeerRule{{FQDNs: sels}}}}}}
	}
	api, other := policy.FQDN{MatchName: "api.example.com"}, policy.FQDN{MatchPattern: "*.example.org"}
	key := func(f policy.FQDN) string { return policy.SinceKey(pol()[0], f) }
	t0, t1, t2 := time.Unix(100, 0), time.Unix(200, 0), time.Unix(300, 0)
	// The first regeneration (an agent start): trusted with what was learned before.
	since := selectorsSince(nil, pol(api), t0)
	if got, ok := since[key(api)]; !ok || !got.IsZero() {
		t.Fatalf("first: %v, want the zero time for %s", since, api)
	}
	// A selector appearing later: from then on.
	since = selectorsSince(since, pol(api, other), t1)
	if !since[key(api)].IsZero() || !since[key(other)].Equal(t1) {
		t.Fatalf("second: %v, want %s zero and %s at %v", since, api, other, t1)
	}
	// Gone, then back: a new time.
	since = selectorsSince(since, pol(other), t2)
	if _, ok := since[key(api)]; ok {
		t.Fatalf("third: %v still has %s", since, api)
	}
	since = selectorsSince(since, pol(api, other), t2.Add(time.Second))
	if !since[key(api)].Equal(t2.Add(time.Second)) || !since[key(other)].Equal(t1) {
		t.Fatalf("fourth: %v", since)
	}
}

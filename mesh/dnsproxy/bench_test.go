package dnsproxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

type allowAll struct{}

func (allowAll) Allowed(context.Context, Request) bool { return true }

type learnNothing struct{}

func (learnNothing) Learned(context.Context, Answer) error { return nil }

// BenchmarkProxyLatency measures what the proxy adds to a DNS query: the
// pod asks the same server the same question over UDP, in turns, on a port
// the datapath stand-in does not redirect (direct: through the node's
// forwarding only) and on port 53 (through the proxy, with a policy check
// and Learned). It reports the p50 and p99 of both and the added p50 and
// p99 in microseconds (the target: added p99 at most 1 ms). It runs a
// fixed number of queries whatever b.N, for -benchtime 1x (`make bench`):
//
//	MEMBRANE_BENCH_DNS_QUERIES=2000   measured queries per arm
func BenchmarkProxyLatency(b *testing.B) {
	queries := 2000
	if v := os.Getenv("MEMBRANE_BENCH_DNS_QUERIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("MEMBRANE_BENCH_DNS_QUERIES=%q: want a positive number", v)
		}
		queries = n
	}
	w := newWorld(b)
	runProxy(b, w, Config{}, allowAll{}, learnNothing{}, nil)
	pod := w.podSocket(b)
	direct := netip.AddrPortFrom(serverAddr.Addr(), directPort)
	q := query("api.example.com.", dns.TypeA, 1)

	exchange := func(to netip.AddrPort) time.Duration {
		start := time.Now()
		resp, from, _, err := exchangeUDP(pod, to, q, 2*time.Second)
		d := time.Since(start)
		if err != nil || resp.Rcode != dns.RcodeSuccess || from != to || len(resp.Answer) != 2 {
			b.Fatalf("query to %s: %v from %s: %v", to, resp, from, err)
		}
		return d
	}
	// Warm up both paths (neighbour entries, the proxy's goroutines).
	for range 10 {
		exchange(direct)
		exchange(serverAddr)
	}
	before := w.timesAsked("api.example.com.")
	load, _ := os.ReadFile("/proc/loadavg")

	viaDirect, viaProxy := make([]time.Duration, 0, queries), make([]time.Duration, 0, queries)
	for range queries {
		viaDirect = append(viaDirect, exchange(direct))
		viaProxy = append(viaProxy, exchange(serverAddr))
	}
	if got, want := w.timesAsked("api.example.com.")-before, 2*queries; got != want {
		b.Fatalf("the server answered %d queries, want %d: not every query reached it", got, want)
	}
	p := func(ds []time.Duration, q float64) float64 {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		i := min(int(q*float64(len(ds))), len(ds)-1)
		return float64(ds[i].Nanoseconds()) / 1e3
	}
	b.Logf("%d queries per arm, load average before: %s", queries, strings.TrimSpace(string(load)))
	b.ReportMetric(0, "ns/op") // the run's wall time says nothing
	b.ReportMetric(p(viaDirect, 0.50), "direct-p50-µs")
	b.ReportMetric(p(viaDirect, 0.99), "direct-p99-µs")
	b.ReportMetric(p(viaProxy, 0.50), "proxy-p50-µs")
	b.ReportMetric(p(viaProxy, 0.99), "proxy-p99-µs")
	b.ReportMetric(p(viaProxy, 0.50)-p(viaDirect, 0.50), "added-p50-µs")
	b.ReportMetric(p(viaProxy, 0.99)-p(viaDirect, 0.99), "added-p99-µs")
	added99 := p(viaProxy, 0.99) - p(viaDirect, 0.99)
	summary.Record(b, summary.Row{Figure: "DNS answer p99 through the proxy", Value: p(viaProxy, 0.99), Unit: "µs",
		Peer: "direct", PeerValue: p(viaDirect, 0.99), Target: "added <= 1000 µs", Met: summary.Check(added99 <= 1000),
		Note: fmt.Sprintf("added %.0f µs", added99)}.WithRatio())
}

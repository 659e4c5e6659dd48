package policy

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

const (
	benchEndpoints = 100
	benchRules     = 250
)

// benchPolicy is a 250-rule ingress policy: 150 identity+port rules, 40
// port ranges, 30 L3-only, 20 any-identity and 10 deny rules. Identity
// 10000+i may use TCP port 8000+i. shift changes a tenth of the rules.
func benchPolicy(shift int) []Rule {
	allow := PolicyEntry{Verdict: Allow}
	var rules []Rule
	add := func(k PolicyKey, e PolicyEntry) { k.Direction = Ingress; rules = append(rules, Rule{Key: k, Entry: e}) }
	for i := range 150 {
		port := uint16(8000 + i)
		if i%10 == 0 {
			port += uint16(shift)
		}
		add(PolicyKey{RemoteIdentity: Identity(10000 + i), Proto: TCP, Port: port}, allow)
	}
	for i := range 40 {
		lo := uint16(10000 + i*100)
		add(PolicyKey{RemoteIdentity: Identity(20000 + i), Proto: TCP, Port: lo, EndPort: lo + uint16(63+i)}, allow)
	}
	for i := range 30 {
		add(PolicyKey{RemoteIdentity: Identity(30000 + i)}, allow)
	}
	for i := range 20 {
		add(PolicyKey{Proto: UDP, Port: uint16(5300 + i)}, allow)
	}
	for i := range 10 {
		add(PolicyKey{RemoteIdentity: Identity(40000 + i)}, PolicyEntry{Verdict: Deny})
	}
	if len(rules) != benchRules {
		panic(fmt.Sprintf("%d rules", len(rules)))
	}
	return rules
}

// resolverOrder sorts rules by key, as the agent's resolver hands them
// over (mesh/policy: direction, remote identity, protocol, port, end port).
func resolverOrder(rules []Rule) []Rule {
	slices.SortFunc(rules, func(a, b Rule) int {
		return cmp.Or(cmp.Compare(a.Key.Direction, b.Key.Direction), cmp.Compare(a.Key.RemoteIdentity, b.Key.RemoteIdentity),
			cmp.Compare(a.Key.Proto, b.Key.Proto), cmp.Compare(a.Key.Port, b.Key.Port), cmp.Compare(a.Key.EndPort, b.Key.EndPort))
	})
	return rules
}

// programAll sets benchPolicy(shift) on endpoints 1..100 and returns how long it took.
func programAll(tb testing.TB, dp *Datapath, shift int) time.Duration {
	tb.Helper()
	return programRules(tb, dp, benchPolicy(shift))
}

// programRules sets rules on endpoints 1..100 and returns how long it took.
func programRules(tb testing.TB, dp *Datapath, rules []Rule) time.Duration {
	tb.Helper()
	start := time.Now()
	for ep := EndpointID(1); ep <= benchEndpoints; ep++ {
		must(tb, dp.SetEndpointPolicy(ep, rules))
	}
	return time.Since(start)
}

// BenchmarkSetEndpointPolicy: SetEndpointPolicy for 100 endpoints of 250
// rules each, from scratch, unchanged, with a tenth of the rules changed,
// and with one changed (all endpoints one policy, or two in turns).
func BenchmarkSetEndpointPolicy(b *testing.B) {
	e := newEnv(b, Options{})
	clearAll := func() {
		for ep := EndpointID(1); ep <= benchEndpoints; ep++ {
			must(b, e.dp.SetEndpointPolicy(ep, nil))
		}
	}
	b.Run("new", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			b.StopTimer()
			clearAll()
			b.StartTimer()
			total += programAll(b, e.dp, 0)
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/100eps")
	})
	usage, err := e.dp.Count()
	must(b, err)
	b.Logf("map usage after 100 x 250 rules: %+v", usage)
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			programAll(b, e.dp, 0)
		}
	})
	b.Run("tenth-changed", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			programAll(b, e.dp, i%2)
		}
	})
	// In the resolver's order, one rule moving to another port (as the
	// agent sees BenchmarkPolicyChangeToEnforced's "change").
	sorted := [2][]Rule{resolverOrder(benchPolicy(0)), resolverOrder(benchPolicy(0))}
	sorted[1][0].Key.Port++
	b.Run("one-changed-resolver-order", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			programRules(b, e.dp, sorted[i%2])
		}
	})
	// The same change where endpoints take turns between two policies
	// (the second: the first's but for one rule), each endpoint given a
	// copy of its own, as the agent's resolver hands over equal policies
	// of different identities.
	var second [2][]Rule
	for j := range sorted {
		second[j] = slices.Clone(sorted[j])
		second[j][len(second[j])-1].Entry = PolicyEntry{Verdict: Allow}
	}
	b.Run("one-changed-two-policies-copies", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			for ep := EndpointID(1); ep <= benchEndpoints; ep++ {
				p := sorted
				if ep%2 == 0 {
					p = second
				}
				must(b, e.dp.SetEndpointPolicy(ep, slices.Clone(p[i%2])))
			}
		}
	})
}

// BenchmarkDatapath measures the programs per packet (BPF_PROG_RUN, time
// taken in the kernel) for an endpoint with a 250-rule policy, with 100 such
// endpoints in the policy map.
func BenchmarkDatapath(b *testing.B) {
	e := newEnv(b, Options{EventsBufferSize: 64 << 20, MaxConntrack: 1 << 18})
	d := programAll(b, e.dp, 0)
	b.Logf("SetEndpointPolicy for %d endpoints x %d rules: %s", benchEndpoints, benchRules, d.Round(time.Millisecond))
	for n := range 150 {
		must(b, e.dp.UpsertIPCache(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(n >> 8), byte(n)}), 32), Identity(10000+n)))
	}
	// BPF_PROG_RUN without a context runs on the netns's loopback (ifindex 1).
	must(b, e.dp.UpsertEndpoint(1, Endpoint{ID: 1, Identity: 5000, EnforceIngress: true}))
	prog := e.dp.progs.PolicyToPod
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := e.events()
	go func() { _ = r.Run(ctx, func(FlowEvent) {}) }() // keep the ring buffer drained

	peer, pod := "10.200.0.75", "10.244.0.10" // identity 10075, allowed TCP 8075
	perPacket := func(b *testing.B, frame []byte, repeat int) {
		var total time.Duration
		for b.Loop() {
			e.in(func() error {
				ret, d, err := prog.Benchmark(frame, repeat, nil)
				if err == nil && ret != retNext && ret != retDrop {
					err = fmt.Errorf("returned %d", int32(ret))
				}
				total += d
				return err
			})
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
	}
	b.Run("established", func(b *testing.B) {
		syn := tcpPkt(peer, pod, 40000, 8075, SYN)
		e.in(func() error { _, _, err := prog.Benchmark(syn.frame(), 1, nil); return err })
		perPacket(b, syn.reverse(ACK).reverse(ACK).frame(), 100000)
	})
	b.Run("new-denied", func(b *testing.B) {
		perPacket(b, tcpPkt(peer, pod, 40001, 9999, SYN).frame(), 100000)
	})
	b.Run("new-allowed-no-ct", func(b *testing.B) {
		// A RST opens no flow: the full policy lookup (and a trace) every time.
		perPacket(b, tcpPkt(peer, pod, 40002, 8075, RST|ACK).frame(), 100000)
	})
	b.Run("new-allowed", func(b *testing.B) {
		// A new flow each time: lookup, conntrack entry and trace event.
		var total time.Duration
		var n int
		port := 1024
		for b.Loop() {
			e.in(func() error {
				for range 2000 {
					port = port%60000 + 1
					_, d, err := prog.Benchmark(tcpPkt(peer, pod, uint16(port), 8075, SYN).frame(), 1, nil)
					if err != nil {
						return err
					}
					total += d
					n++
				}
				return nil
			})
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(n), "ns/pkt")
	})
	// An endpoint no policy selects (the pod most traffic comes from).
	free := e.dp.progs.PolicyFromPod
	must(b, e.dp.UpsertEndpoint(1, Endpoint{ID: 1, Identity: 5000}))
	freePacket := func(b *testing.B, frame []byte) {
		var total time.Duration
		for b.Loop() {
			e.in(func() error {
				ret, d, err := free.Benchmark(frame, 100000, nil)
				if err == nil && ret != retNext {
					err = fmt.Errorf("returned %d", int32(ret))
				}
				total += d
				return err
			})
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
	}
	b.Run("no-policy-established", func(b *testing.B) {
		syn := tcpPkt(pod, peer, 40100, 8075, SYN)
		e.in(func() error { _, _, err := free.Benchmark(syn.frame(), 1, nil); return err })
		freePacket(b, tcpPkt(pod, peer, 40100, 8075, ACK).frame())
	})
	b.Run("no-policy-reply", func(b *testing.B) {
		syn := tcpPkt(peer, pod, 40101, 8075, SYN)
		e.in(func() error { _, _, err := prog.Benchmark(syn.frame(), 1, nil); return err })
		freePacket(b, syn.reverse(ACK).frame())
	})
	b.Run("no-policy-new", func(b *testing.B) {
		// A new connection each time: what conntrack and the trace cost.
		var total time.Duration
		var n int
		port := 1024
		for b.Loop() {
			e.in(func() error {
				for range 2000 {
					port = port%60000 + 1
					_, d, err := free.Benchmark(tcpPkt(pod, peer, uint16(port), 8075, SYN).frame(), 1, nil)
					if err != nil {
						return err
					}
					total += d
					n++
				}
				return nil
			})
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(n), "ns/pkt")
	})
	c, err := e.dp.Counters()
	must(b, err)
	if c.EventsLost > 0 {
		b.Logf("events lost: %d", c.EventsLost)
	}
}

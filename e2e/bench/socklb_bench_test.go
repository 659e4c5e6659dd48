package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// Arms of the comparison.
const (
	armMembrane       = "membrane socket LB"
	armDirect         = "direct to pod IPs, membrane cluster"
	armIPTables       = "kube-proxy iptables"
	armIPTablesLast   = "kube-proxy iptables, VIP rule last"
	armDirectIPTables = "direct to pod IPs, iptables rules loaded"
	armNFTables       = "kube-proxy nftables"
	armDirectNFTables = "direct to pod IPs, nftables rules loaded"
	// The floor: a third cluster with neither Membrane nor kube-proxy.
	armDirectBare = "direct to pod IPs, bare cluster (floor)"
	// Membrane's arms again with a 250-rule ingress policy on the backends.
	armMembranePolicy = "membrane socket LB, 250-rule policy"
	armDirectPolicy   = "direct to pod IPs, membrane cluster, 250-rule policy"
)

// The same ways to the backends, as requests per second over established
// connections (crr -rr: one connection per target, kept open).
const rrSuffix = " [requests/s, kept connection]"

const (
	armMembraneRR   = armMembrane + rrSuffix
	armDirectRR     = armDirect + rrSuffix
	armIPTablesRR   = armIPTables + rrSuffix
	armNFTablesRR   = armNFTables + rrSuffix
	armDirectBareRR = armDirectBare + rrSuffix
	armDirectNFTRR  = armDirectNFTables + rrSuffix
	rrBlockIPTables = "iptables" + rrSuffix
	rrBlockNFTables = "nftables" + rrSuffix
)

// blockPolicy is the block of turns with the server policy applied
// (kube-proxy in nftables mode).
const blockPolicy = "nftables+policy"

const (
	clusterMembrane  = "bench-membrane"
	clusterKubeProxy = "bench-kubeproxy"
	clusterBare      = "bench-bare"
	// Each cluster its own pod range, apart from the default one of other
	// local clusters that may run beside.
	podCIDRMembrane  = "10.246.0.0/16"
	podCIDRKubeProxy = "10.247.0.0/16"
	podCIDRBare      = "10.235.0.0/16"
	// Extra services timed at the largest size, per arm.
	extraSamples = 5
	// Pause between a timed service's EndpointSlice and its Service with
	// Membrane (kube-proxy gets until it is idle: waitKubeProxyIdle).
	settle = 2 * time.Second
)

// BenchmarkSocketLBvsKubeProxy: TCP_CRR-style connection rate from a pod to
// the most recently created Service VIP, with Membrane's socket LB, with
// kube-proxy (iptables, nftables) and directly to the backend pods, at
// growing service counts; and the time to program one more service.
//
// Two clusters run side by side with the same workload and the same service
// sets: one with membrane-agent on every node, one without it where
// kube-proxy runs in every node namespace instead. A third, with neither,
// gives the floor: direct pod-IP connects over bare veths. The arms of all
// clusters take turns in short runs, so that load from elsewhere on the
// machine falls on all of them alike. After the nftables block of each size
// Membrane's arms run again with a 250-rule ingress policy on the backends;
// at the first size every way also runs as requests over kept connections.
// For Membrane's arms the kernel's BPF run-time statistics of the agents'
// programs give the datapath's own cost per connection, and the agents'
// cgroups their CPU time per connection (dpProbe).
func BenchmarkSocketLBvsKubeProxy(b *testing.B) {
	e := newEnv(b)
	cfg := benchConfig(b)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.deadline)
	defer cancel()
	begin := time.Now()

	l := load{bin: buildCRR(ctx, b), duration: cfg.duration, warmup: 300 * time.Millisecond, concurrency: 1}
	rep := &report{sizes: cfg.sizes, load: l, rounds: cfg.rounds}

	m := upCluster(ctx, b, e, clusterMembrane, podCIDRMembrane, false)
	defer m.down()
	k := upCluster(ctx, b, e, clusterKubeProxy, podCIDRKubeProxy, true)
	defer k.down()
	bare := upCluster(ctx, b, e, clusterBare, podCIDRBare, true)
	defer bare.down()
	for _, c := range []*cluster{m, k, bare} {
		if err := c.deploy(ctx); err != nil {
			b.Fatal(err)
		}
	}
	var (
		maps         []*lbMap
		pinDirs      []string
		agentCgroups []string
	)
	for _, n := range m.state.Nodes {
		agent, err := localcluster.AgentPod(ctx, m.client, n.Name)
		if err != nil {
			b.Fatal(err)
		}
		agentCgroups = append(agentCgroups, filepath.Join(m.nodeCgroup(n), "pods", string(agent.UID)))
		pinDirs = append(pinDirs, m.state.Layout().NodeAgentPinDir(n.Name))
		lm, err := openLBMap(m.state.Layout().NodeAgentPinDir(n.Name))
		if err != nil {
			b.Fatal(err)
		}
		defer lm.Close()
		maps = append(maps, lm)
	}
	probe, err := openDPProbe(pinDirs, agentCgroups)
	if err != nil {
		b.Fatal(err)
	}
	defer probe.Close()
	rep.probe, rep.probed = probe, m
	kp := &proxyRunner{c: k, rep: rep}
	defer kp.stop()
	rep.kubeProxyFlags = strings.Join(kubeProxyFlags(k.state, k.node, "iptables|nftables"), " ")

	for i, size := range cfg.sizes {
		last := i == len(cfg.sizes)-1
		if kp.mode() != "iptables" {
			kp.switchTo(ctx, b, "iptables", kp.lastVIP(ctx, b))
		}
		kp.grow(ctx, b, size-1, m)
		m.waitMembrane(ctx, b, maps, size-1)

		mTarget, s := m.timeMembrane(ctx, b, maps, "target")
		rep.addProgram(armMembrane, s)
		progress(b, "membrane: target %s (service %d) programmed in %s (client node), %s (all nodes)", mTarget, size, ms(s.client), ms(s.all))
		kTarget, s := k.timeKubeProxy(ctx, b, "iptables", "target")
		rep.addProgram(armIPTables, s)
		progress(b, "kube-proxy iptables: target %s (service %d) programmed in %s (client node), %s (all nodes)", kTarget, size, ms(s.client), ms(s.all))

		membrane := []arm{
			{name: armMembrane, c: m, targets: []netip.AddrPort{mTarget}},
			{name: armDirect, c: m, targets: backendTargets(m)},
		}
		measureBlock(ctx, b, l, rep, kp, size, "iptables", cfg.rounds, append(membrane,
			arm{name: armIPTables, c: k, targets: []netip.AddrPort{kTarget}, rulePosition: true},
			arm{name: armIPTablesLast, c: k, lastRule: true},
			arm{name: armDirectIPTables, c: k, targets: backendTargets(k)},
		))
		if i == 0 {
			measureBlock(ctx, b, l, rep, kp, size, rrBlockIPTables, cfg.rounds, []arm{
				{name: armMembraneRR, c: m, targets: []netip.AddrPort{mTarget}, rr: true},
				{name: armDirectRR, c: m, targets: backendTargets(m), rr: true},
				{name: armIPTablesRR, c: k, targets: []netip.AddrPort{kTarget}, rr: true},
			})
		}
		if last {
			// Before leaving iptables mode: with iptables-nft, coming back
			// to it at this size would cost a full sync of minutes. The
			// nftables arm then targets the last extra service.
			for range extraSamples {
				vip, s := k.timeKubeProxy(ctx, b, "iptables", "extra")
				rep.addProgram(armIPTables, s)
				kTarget = vip
				progress(b, "kube-proxy iptables: extra service at %d programmed in %s (client node), %s (all nodes)", s.existing, ms(s.client), ms(s.all))
			}
		}

		kp.switchTo(ctx, b, "nftables", kTarget)
		floor := arm{name: armDirectBare, c: bare, targets: backendTargets(bare)}
		nft := arm{name: armNFTables, c: k, targets: []netip.AddrPort{kTarget}}
		measureBlock(ctx, b, l, rep, kp, size, "nftables", cfg.rounds, append(membrane,
			nft, arm{name: armDirectNFTables, c: k, targets: backendTargets(k)}, floor,
		))
		if i == 0 {
			measureBlock(ctx, b, l, rep, kp, size, rrBlockNFTables, cfg.rounds, []arm{
				{name: armMembraneRR, c: m, targets: []netip.AddrPort{mTarget}, rr: true},
				{name: armDirectRR, c: m, targets: backendTargets(m), rr: true},
				{name: armNFTablesRR, c: k, targets: []netip.AddrPort{kTarget}, rr: true},
				{name: armDirectNFTRR, c: k, targets: backendTargets(k), rr: true},
				{name: armDirectBareRR, c: bare, targets: backendTargets(bare), rr: true},
			})
		}
		// The same with the 250-rule policy on the backends.
		if err := m.setServerPolicy(ctx, probe, true); err != nil {
			b.Fatal(err)
		}
		measureBlock(ctx, b, l, rep, kp, size, blockPolicy, cfg.rounds, []arm{
			{name: armMembranePolicy, c: m, targets: []netip.AddrPort{mTarget}},
			{name: armDirectPolicy, c: m, targets: backendTargets(m)},
			nft, floor,
		})
		if err := m.setServerPolicy(ctx, probe, false); err != nil {
			b.Fatal(err)
		}
		if last {
			for range extraSamples {
				_, s := k.timeKubeProxy(ctx, b, "nftables", "extra")
				rep.addProgram(armNFTables, s)
				progress(b, "kube-proxy nftables: extra service at %d programmed in %s (client node), %s (all nodes)", s.existing, ms(s.client), ms(s.all))
			}
			for range extraSamples {
				_, s := m.timeMembrane(ctx, b, maps, "extra")
				rep.addProgram(armMembrane, s)
				progress(b, "membrane: extra service at %d programmed in %s (client node), %s (all nodes)", s.existing, ms(s.client), ms(s.all))
			}
		}
	}

	rep.took = time.Since(begin)
	fmt.Print(rep.String())
	rep.metrics(b)
	recordSummary(b, rep.summary()...)
}

type config struct {
	sizes    []int
	duration time.Duration
	rounds   int
	deadline time.Duration
}

func benchConfig(b *testing.B) config {
	b.Helper()
	c := config{sizes: []int{1, 1000, 10000}, duration: 1500 * time.Millisecond, rounds: 5, deadline: 55 * time.Minute}
	if v := os.Getenv("MEMBRANE_BENCH_SIZES"); v != "" {
		c.sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || (len(c.sizes) > 0 && n <= c.sizes[len(c.sizes)-1]) {
				b.Fatalf("MEMBRANE_BENCH_SIZES=%q: want growing counts >= 1", v)
			}
			c.sizes = append(c.sizes, n)
		}
	}
	if v := os.Getenv("MEMBRANE_BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("MEMBRANE_BENCH_DURATION=%q: want a positive duration", v)
		}
		c.duration = d
	}
	if v := os.Getenv("MEMBRANE_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("MEMBRANE_BENCH_ROUNDS=%q: want >= 1", v)
		}
		c.rounds = n
	}
	// Finish (and remove the clusters) before go test's own timeout panics,
	// which would skip every cleanup.
	if f := flag.Lookup("test.timeout"); f != nil {
		if t, err := time.ParseDuration(f.Value.String()); err == nil && t > 0 {
			if c.sizes[len(c.sizes)-1] >= 10000 && t < 30*time.Minute {
				b.Fatalf("bench: -timeout %s is too short: the full run takes 15 to 30 minutes; use -timeout 60m (make bench does)", t)
			}
			c.deadline = min(c.deadline, t-2*time.Minute)
		}
	}
	return c
}

// progress prints a timestamped line at once (b.Log would hold it until the
// end of the benchmark).
func progress(b *testing.B, format string, args ...any) {
	b.Helper()
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// growAll brings every cluster to total services at once.
func growAll(ctx context.Context, b *testing.B, total int, cs ...*cluster) {
	b.Helper()
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.grow(ctx, total)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// arm is one way to the backends: a VIP or the backend pods, from the client
// pod of a cluster.
type arm struct {
	name    string
	c       *cluster
	targets []netip.AddrPort
	// rulePosition notes where the VIP's rule is in kube-proxy's
	// KUBE-SERVICES chain (iptables mode).
	rulePosition bool
	// lastRule targets, instead, the service whose rule kube-proxy put last
	// in KUBE-SERVICES (it writes them in Go map order, so the most recent
	// service's place is random).
	lastRule bool
	// rr: requests over kept connections (crr -rr).
	rr bool
}

// measureBlock runs every arm `rounds` times, one after the other, each
// round starting one arm further, so that no arm always follows the same.
func measureBlock(ctx context.Context, b *testing.B, l load, rep *report, kp *proxyRunner, size int, block string, rounds int, arms []arm) {
	b.Helper()
	for r := range rounds {
		for j := range arms {
			a := arms[(r+j)%len(arms)]
			note := ""
			if a.lastRule {
				rules, err := rules(ctx, a.c.node, "iptables")
				if err != nil {
					b.Fatal(err)
				}
				vip, pos, total := lastServiceRule(rules, benchPortHTTP)
				if !vip.IsValid() {
					b.Fatalf("no service rule in KUBE-SERVICES on %s", a.c.node.Name)
				}
				a.targets = []netip.AddrPort{netip.AddrPortFrom(vip, benchPortHTTP)}
				note = fmt.Sprintf("VIP rule %d/%d", pos, total)
			}
			if a.rulePosition {
				rules, err := rules(ctx, a.c.node, "iptables")
				if err != nil {
					b.Fatal(err)
				}
				pos, total := servicesPosition(rules, a.targets[0].Addr())
				note = fmt.Sprintf("VIP rule %d/%d", pos, total)
			}
			var (
				before dpSnapshot
				dpNote string
			)
			probed := a.c == rep.probed
			if probed {
				var err error
				if before, err = rep.probe.snapshot(); err != nil {
					b.Fatal(err)
				}
			}
			al := l
			al.rr = a.rr
			res, err := al.run(ctx, a.c, a.targets)
			if err != nil {
				b.Fatalf("%s at %d services: %v", a.name, size, err)
			}
			if probed {
				after, err := rep.probe.snapshot()
				if err != nil {
					b.Fatal(err)
				}
				d := after.sub(before, res.Conns+res.WarmConns)
				rep.addDatapath(a.name, size, d)
				dpNote = "datapath: " + d.String()
			}
			if err := kp.check(); err != nil {
				b.Fatal(err)
			}
			rep.addRate(a.name, size, block, res, note)
			progress(b, "%s at %d services: %.0f conns/s (p50 %d µs, p99 %d µs, %d errors) %s %s", a.name, size, res.Rate, res.P50Micros, res.P99Micros, res.Errors, note, dpNote)
		}
	}
}

// backendTargets are the backend pods, which the direct arm uses in turn
// (the VIP arms pick one of the two at random per connection).
func backendTargets(c *cluster) []netip.AddrPort {
	var ts []netip.AddrPort
	for _, ip := range c.backIPs {
		ts = append(ts, netip.AddrPortFrom(ip, benchPortHTTP))
	}
	return ts
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

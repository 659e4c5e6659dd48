package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// programSample is the time from a Service create call returning (its
// EndpointSlice made before) to its entry in the nodes' datapath.
type programSample struct {
	kind     string // "target" (the VIP then measured) or "extra"
	existing int    // services before it
	client   time.Duration
	all      time.Duration // until every node had it
	// kube-proxy only: its IPv4 syncs on the client node from just before
	// the Service create call until the rule was listed, and their mean
	// duration (its sync_proxy_rules_duration_seconds).
	syncs    int
	syncMean time.Duration
}

// timeMembrane creates one more service and times it into the BPF service
// map of every node (direct lookups every 100 µs).
func (c *cluster) timeMembrane(ctx context.Context, b *testing.B, maps []*lbMap, kind string) (netip.AddrPort, programSample) {
	b.Helper()
	existing := c.created
	vip, t0, err := c.createOne(ctx, func(time.Time) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settle):
			return nil
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	ds := make([]time.Duration, len(maps))
	errs := make([]error, len(maps))
	var wg sync.WaitGroup
	for i, m := range maps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			at, err := m.wait(wctx, vip, benchPortHTTP, 2)
			ds[i], errs[i] = at.Sub(t0), err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("node %s: %v", c.state.Nodes[i].Name, err)
		}
	}
	return netip.AddrPortFrom(vip, benchPortHTTP), programSample{kind: kind, existing: existing, client: ds[0], all: slices.Max(ds)}
}

// timeKubeProxy creates one more service and times it into kube-proxy's
// rules on every node, as the kernel announces them.
func (c *cluster) timeKubeProxy(ctx context.Context, b *testing.B, mode, kind string) (netip.AddrPort, programSample) {
	b.Helper()
	var (
		ws              []*nftWatch
		sum0, count0    float64
		existing        = c.created
		watchAndMeasure = func(sliceCreated time.Time) error {
			if err := c.waitKubeProxyIdle(ctx, sliceCreated); err != nil {
				return err
			}
			for _, n := range c.state.Nodes {
				w, err := watchKubeProxyRules(n.Netns, mode)
				if err != nil {
					return err
				}
				ws = append(ws, w)
			}
			var err error
			sum0, count0, err = syncStats(ctx, c.node)
			return err
		}
	)
	defer func() {
		for _, w := range ws {
			w.Close()
		}
	}()
	vip, t0, err := c.createOne(ctx, watchAndMeasure)
	if err != nil {
		b.Fatal(err)
	}
	ds := make([]time.Duration, len(ws))
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			at, err := w.wait(wctx, vip)
			ds[i], errs[i] = at.Sub(t0), err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("node %s (kube-proxy %s): %v", c.state.Nodes[i].Name, mode, err)
		}
	}
	target := netip.AddrPortFrom(vip, benchPortHTTP)
	// Cross-check with the rules as a user lists them.
	r, err := rules(ctx, c.node, mode)
	if err != nil {
		b.Fatal(err)
	}
	if !hasVIP(r, mode, target) {
		b.Fatalf("kube-proxy %s on %s: the kernel announced a rule for %s, but the listed rules lack it", mode, c.node.Name, target)
	}
	s := programSample{kind: kind, existing: existing, client: ds[0], all: slices.Max(ds)}
	// kube-proxy's own account of its syncs meanwhile (on the client node).
	if sum1, count1, err := syncStats(ctx, c.node); err != nil {
		b.Fatal(err)
	} else if count1 > count0 {
		s.syncs = int(count1 - count0)
		s.syncMean = time.Duration((sum1 - sum0) / (count1 - count0) * float64(time.Second))
	}
	return target, s
}

// waitMembrane waits until every node's agent has programmed n services.
func (c *cluster) waitMembrane(ctx context.Context, b *testing.B, maps []*lbMap, n int) {
	b.Helper()
	start := time.Now()
	err := poll(ctx, 5*time.Minute, fmt.Sprintf("%d services programmed on every node", n), func() (bool, error) {
		if err := c.state.CheckProcesses(); err != nil {
			return false, err
		}
		for _, m := range maps {
			got, err := m.countServices(benchPortHTTP, 2)
			if err != nil {
				return false, err
			}
			if got < n {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	progress(b, "membrane: %d services in the BPF maps of every node (%s after the last create)", n, time.Since(start).Round(time.Millisecond))
}

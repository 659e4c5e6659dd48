package bench

// The benchmarks' headline figures for the summary table `make bench`
// prints at the end (package summary): each benchmark hands its rows to
// recordSummary where it computes its final figures, from the same values
// its report prints.

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

// recordSummary appends rows to the run's summary file (none unless
// MEMBRANE_BENCH_SUMMARY is set).
func recordSummary(b *testing.B, rows ...summary.Row) {
	b.Helper()
	summary.Record(b, rows...)
}

// cpu is a CPU figure, 0 when not measured (NaN: the arm had no proxy).
func cpu(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// µs is d in whole microseconds, as the reports print it (us).
func µs(d time.Duration) float64 { return float64(d.Microseconds()) }

// summary: the socket LB's ratios with a target at each size it is judged
// at (every size, or the largest for the 10,000-service targets), the
// kept-connection ratios at the first size, and the time to program one
// more service.
func (r *report) summary() []summary.Row {
	var rows []summary.Row
	last := r.sizes[len(r.sizes)-1]
	add := func(row ratioRow, size int) {
		x, y := r.mean(row.a, size, row.block), r.mean(row.b, size, row.block)
		if row.target == "" && (x == 0 || y == 0) {
			return // not measured in this run
		}
		fig := fmt.Sprintf("%s, %d services", row.a, size)
		if row.block != "" {
			fig += ", " + row.block + " block"
		}
		s := summary.Row{Figure: fig, Value: x, Unit: "conns/s", Peer: row.b, PeerValue: y, Target: row.target, Met: summary.NoTarget}.WithRatio()
		if strings.HasSuffix(row.a, rrSuffix) {
			s.Unit = "requests/s"
		}
		if row.target != "" {
			switch strings.TrimSpace(met(x, y, row.target)) {
			case "met":
				s.Met = summary.Met
			case "MISSED":
				s.Met = summary.Missed
			default:
				s.Met = summary.NotEvaluated
			}
		}
		rows = append(rows, s)
	}
	for _, row := range ratioRows() {
		switch {
		case row.target != "":
			for _, size := range r.sizes {
				if row.judged(size, last) {
					add(row, size)
				}
			}
		case row.a == armMembraneRR && (row.b == armIPTablesRR || row.b == armNFTablesRR):
			add(row, r.sizes[0])
		}
	}
	if mm, ok := r.extraMedian(armMembrane); ok {
		target := summary.Row{Figure: fmt.Sprintf("one more service programmed at ~%d services, client node, median", last),
			Value: msf(mm), Unit: "ms", Target: "<= 5 ms", Met: summary.Check(mm <= 5*time.Millisecond)}
		for _, arm := range []string{armIPTables, armNFTables} {
			if med, ok := r.extraMedian(arm); ok {
				row := target
				row.Peer, row.PeerValue = arm, msf(med)
				rows = append(rows, row.WithRatio())
				target.Target, target.Met = "", summary.NoTarget // counted once
			}
		}
		if target.Target != "" {
			rows = append(rows, target) // no kube-proxy figure to compare with
		}
	}
	return rows
}

// summary: one more HTTPRoute from write to serving (the target), the
// time to all routes serving, and requests/s through the Gateway against
// straight to the pod.
func (r *gwReport) summary() []summary.Row {
	var rows []summary.Row
	if len(r.samples) > 0 {
		p50, p99, _ := r.percentiles(func(s gwSample) time.Duration { return s.serving })
		rows = append(rows, summary.Row{Figure: fmt.Sprintf("one more HTTPRoute, write -> serving p99 at %d routes", r.routes),
			Value: msf(p99), Unit: "ms", Target: fmt.Sprintf("<= %d ms", gwTarget.Milliseconds()), Met: summary.Check(p99 <= gwTarget),
			Note: fmt.Sprintf("p50 %.1f ms, %d changes", msf(p50), len(r.samples))})
	}
	rows = append(rows, summary.Row{Figure: fmt.Sprintf("0 -> %d HTTPRoutes all serving", r.routes), Value: r.allServing.Seconds(),
		Unit: "s", Met: summary.NoTarget})
	if len(r.arms) == 2 {
		rows = append(rows, summary.Row{Figure: "requests/s through the Gateway", Value: r.arms[0].rate(), Unit: "requests/s",
			Peer: "straight to the pod", PeerValue: r.arms[1].rate(), Met: summary.NoTarget}.WithRatio())
	}
	return rows
}

// policySummary: a policy change to enforced on every endpoint, end to
// end and in the agents' own view, against the targets.
func policySummary(p50, p99 time.Duration, changes int, c2e *histogram) []summary.Row {
	rows := []summary.Row{{Figure: "policy change -> enforced p99, end to end", Value: msf(p99), Unit: "ms",
		Target: fmt.Sprintf("<= %d ms", policyTarget.Milliseconds()), Met: summary.Check(p99 <= policyTarget),
		Note: fmt.Sprintf("p50 %.1f ms, %d changes", msf(p50), changes)}}
	if c2e != nil && c2e.count > 0 {
		a99 := c2e.quantile(0.99)
		rows = append(rows, summary.Row{Figure: "policy change -> maps written p99, agents' histogram", Value: 1000 * a99, Unit: "ms",
			Target: fmt.Sprintf("<= %d ms", policyAgentTarget.Milliseconds()), Met: summary.Check(a99 <= policyAgentTarget.Seconds()),
			Note: "bucket estimate"})
	}
	return rows
}

// policyNewPodSummary: a new pod's policy enforced after it is Ready.
func policyNewPodSummary(p99 time.Duration, pods int) summary.Row {
	return summary.Row{Figure: "new pod Ready -> enforced p99", Value: msf(p99), Unit: "ms",
		Target: fmt.Sprintf("<= %d ms", policyNewPodTarget.Milliseconds()), Met: summary.Check(p99 <= policyNewPodTarget),
		Note: fmt.Sprintf("%d pods", pods)}
}

// fqdnSummary: DNS answers through the proxy against direct ones (the
// added p99 has a target), and the connections right after an answer.
func fqdnSummary(direct, proxy []time.Duration, firstPacketDrops int, denied float64) []summary.Row {
	d99, p99 := percentile(direct, 0.99), percentile(proxy, 0.99)
	return []summary.Row{
		summary.Row{Figure: "DNS answer p99 through the proxy", Value: µs(p99), Unit: "µs", Peer: "direct to CoreDNS",
			PeerValue: µs(d99), Target: "added <= 1000 µs", Met: summary.Check(p99-d99 <= time.Millisecond),
			Note: fmt.Sprintf("added %.0f µs", µs(p99-d99))}.WithRatio(),
		{Figure: "connections after a fresh answer: failed or SYN retransmitted", Value: float64(firstPacketDrops),
			Target: "0, and no POLICY_DENIED drop", Met: summary.Check(firstPacketDrops == 0 && denied == 0),
			Note: fmt.Sprintf("%.0f POLICY_DENIED drops", denied)},
	}
}

// wgSummary: the tunnel's throughput against plain veth and its CPU cost
// against the floor (the cipher's own cost plus the plain path's), as
// wgPrintFloor prints them.
func wgSummary(crypto float64, wg, ul *wgArm) []summary.Row {
	tunnel, plain := wgMedian(wgClusterCost(wg.cost)), wgMedian(wgClusterCost(ul.cost))
	share := 100 * wgMedian(wg.tput) / wgMedian(ul.tput)
	return []summary.Row{
		summary.Row{Figure: "WireGuard throughput, pod to pod across nodes", Value: wgMedian(wg.tput), Unit: "Gbit/s",
			Peer: "plain underlay", PeerValue: wgMedian(ul.tput), Target: fmt.Sprintf(">= %.0f%% of the peer", wgTargetShare),
			Met: summary.Check(share >= wgTargetShare), Note: fmt.Sprintf("%.1f%%", share)}.WithRatio(),
		summary.Row{Figure: "WireGuard CPU per GB, the cluster's processes", Value: tunnel, Unit: "CPU-s",
			Peer: "floor: cipher + plain underlay", PeerValue: crypto + plain, Target: fmt.Sprintf("<= %.1f CPU-s", wgTargetCost),
			Met: summary.Check(tunnel <= wgTargetCost)}.WithRatio(),
	}
}

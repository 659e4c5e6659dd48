package bench

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

// checkRows: every row is one the summary file takes.
func checkRows(t *testing.T, rows []summary.Row) map[[2]string]summary.Row {
	t.Helper()
	out := map[[2]string]summary.Row{}
	for i := range rows {
		rows[i].Benchmark = t.Name()
		out[[2]string{rows[i].Figure, rows[i].Peer}] = rows[i]
	}
	if err := summary.Append(filepath.Join(t.TempDir(), "s.jsonl"), rows...); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSocketLBSummary(t *testing.T) {
	r := &report{sizes: []int{1, 100}}
	r.addRate(armMembrane, 100, "iptables", crrResult{Rate: 3000}, "")
	r.addRate(armIPTables, 100, "iptables", crrResult{Rate: 900}, "")
	r.addRate(armMembrane, 100, "nftables", crrResult{Rate: 2000}, "")
	r.addRate(armNFTables, 100, "nftables", crrResult{Rate: 2100}, "")
	r.addRate(armMembraneRR, 1, rrBlockIPTables, crrResult{Rate: 50000}, "")
	r.addRate(armIPTablesRR, 1, rrBlockIPTables, crrResult{Rate: 40000}, "")
	r.addProgram(armMembrane, programSample{kind: "extra", client: 3 * time.Millisecond})
	r.addProgram(armIPTables, programSample{kind: "extra", client: 300 * time.Millisecond})
	rows := checkRows(t, r.summary())

	for _, c := range []struct {
		figure, peer string
		ratio        float64
		met          summary.Verdict
	}{
		{armMembrane + ", 100 services, iptables block", armIPTables, 3000.0 / 900, summary.Met},
		{armMembrane + ", 100 services, nftables block", armNFTables, 2000.0 / 2100, summary.Missed},
		{armMembraneRR + ", 1 services, " + rrBlockIPTables + " block", armIPTablesRR, 50000.0 / 40000, summary.NoTarget},
		{"one more service programmed at ~100 services, client node, median", armIPTables, 0.01, summary.Met},
	} {
		row, ok := rows[[2]string{c.figure, c.peer}]
		if !ok {
			t.Errorf("no row %q vs %q in %v", c.figure, c.peer, rows)
			continue
		}
		if !row.HasRatio || row.Ratio != c.ratio || row.Met != c.met {
			t.Errorf("%s vs %s: ratio %v (%v) %s, want %v %s", c.figure, c.peer, row.Ratio, row.HasRatio, row.Met, c.ratio, c.met)
		}
	}
	// Arms with a target but not measured: not evaluated, never met.
	row := rows[[2]string{armMembrane + ", 100 services, nftables block", armDirectBare}]
	if row.Met != summary.NotEvaluated || row.HasRatio {
		t.Errorf("floor not measured: %+v", row)
	}
	// The nftables target is judged at every size, the iptables one
	// (set for 10,000 services) at the largest only.
	if row, ok := rows[[2]string{armMembrane + ", 1 services, nftables block", armNFTables}]; !ok || row.Met != summary.NotEvaluated {
		t.Errorf("nftables target at the first size: %+v (present %v), want not evaluated", row, ok)
	}
	if row, ok := rows[[2]string{armMembrane + ", 1 services, iptables block", armIPTables}]; ok {
		t.Errorf("iptables target judged at the first size: %+v", row)
	}
}

func TestPolicySummary(t *testing.T) {
	rows := checkRows(t, append(policySummary(20*time.Millisecond, 101*time.Millisecond, 42, nil),
		policyNewPodSummary(500*time.Millisecond, 10)))
	if row := rows[[2]string{"policy change -> enforced p99, end to end", ""}]; row.Value != 101 || row.Met != summary.Missed {
		t.Errorf("end to end: %+v", row)
	}
	if row := rows[[2]string{"new pod Ready -> enforced p99", ""}]; row.Met != summary.Met {
		t.Errorf("new pod: %+v", row)
	}
}

func TestFQDNSummary(t *testing.T) {
	direct := []time.Duration{100 * time.Microsecond}
	rows := checkRows(t, fqdnSummary(direct, []time.Duration{1101 * time.Microsecond}, 0, 0))
	if row := rows[[2]string{"DNS answer p99 through the proxy", "direct to CoreDNS"}]; row.Met != summary.Missed || row.Ratio != 11.01 {
		t.Errorf("added 1001 µs: %+v", row)
	}
	rows = checkRows(t, fqdnSummary(direct, []time.Duration{1100 * time.Microsecond}, 0, 1))
	if row := rows[[2]string{"DNS answer p99 through the proxy", "direct to CoreDNS"}]; row.Met != summary.Met {
		t.Errorf("added 1000 µs: %+v", row)
	}
	if row := rows[[2]string{"connections after a fresh answer: failed or SYN retransmitted", ""}]; row.Met != summary.Missed {
		t.Errorf("a POLICY_DENIED drop: %+v", row)
	}
}

func TestWireGuardSummary(t *testing.T) {
	wg := &wgArm{tput: []float64{2.5}, cost: []wgCost{{agents: 2, iperf: 1}}}
	ul := &wgArm{tput: []float64{10}, cost: []wgCost{{agents: 0.1, iperf: 0.4}}}
	rows := checkRows(t, wgSummary(1.5, wg, ul))
	if row := rows[[2]string{"WireGuard throughput, pod to pod across nodes", "plain underlay"}]; row.Ratio != 0.25 || row.Met != summary.Met {
		t.Errorf("throughput: %+v", row)
	}
	if row := rows[[2]string{"WireGuard CPU per GB, the cluster's processes", "floor: cipher + plain underlay"}]; row.Value != 3 || row.PeerValue != 2 || row.Met != summary.Met {
		t.Errorf("cost: %+v", row)
	}
}

func TestGatewaySummary(t *testing.T) {
	r := &gwReport{routes: 1000, allServing: 90 * time.Second,
		samples: []gwSample{{serving: 200 * time.Millisecond}, {serving: 1200 * time.Millisecond}},
		arms:    []*gwArm{{reqs: 500, elapsed: time.Second}, {reqs: 1000, elapsed: time.Second}}}
	rows := checkRows(t, r.summary())
	if row := rows[[2]string{"one more HTTPRoute, write -> serving p99 at 1000 routes", ""}]; row.Value != 1200 || row.Met != summary.Missed {
		t.Errorf("write -> serving: %+v", row)
	}
	if row := rows[[2]string{"requests/s through the Gateway", "straight to the pod"}]; row.Ratio != 0.5 || row.Met != summary.NoTarget {
		t.Errorf("requests/s: %+v", row)
	}
}

// The ratio table judges a target only at the sizes it is set for: the
// iptables target at the largest size, the nftables one at every size.
func TestSocketLBRatioTable(t *testing.T) {
	r := &report{sizes: []int{1, 100}}
	for _, size := range r.sizes {
		r.addRate(armMembrane, size, "iptables", crrResult{Rate: 2000}, "")
		r.addRate(armIPTables, size, "iptables", crrResult{Rate: 1000}, "")
		r.addRate(armMembrane, size, "nftables", crrResult{Rate: 2000}, "")
		r.addRate(armNFTables, size, "nftables", crrResult{Rate: 1000}, "")
	}
	lines := map[string]string{}
	for _, line := range strings.Split(r.String(), "\n") {
		for _, name := range []string{"membrane / kube-proxy iptables", "membrane / kube-proxy nftables"} {
			if strings.HasPrefix(strings.TrimSpace(line), name) {
				lines[name] = strings.Join(strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), name)), " ")
			}
		}
	}
	for name, want := range map[string]string{
		"membrane / kube-proxy iptables": "2.00x 2.00x MISSED >= 3x at 100",
		"membrane / kube-proxy nftables": "2.00x met 2.00x met >= 1.0x",
	} {
		if lines[name] != want {
			t.Errorf("%s: %q, want %q", name, lines[name], want)
		}
	}
}

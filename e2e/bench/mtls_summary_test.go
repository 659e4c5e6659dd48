package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

// summary: membrane's added p99 and CPU per request against the mTLS
// sidecar pair's (the targets), and against the pair speaking the tunnel's
// protocol (no target).
func (r *mtlsReport) summary() []summary.Row {
	d, m, s := r.arms[0].stats(), r.arms[1].stats(), r.arms[2].stats()
	target := fmt.Sprintf("<= %.1fx", mtlsTarget)
	p99, cpuRatio, p99ok, cpuok := r.ratios()
	added := summary.Row{Figure: "membrane added p99", Value: µs(m.p99 - d.p99), Unit: "µs",
		Peer: "mTLS sidecar pair added p99", PeerValue: µs(s.p99 - d.p99), Target: target, Met: summary.NotEvaluated,
		Note: "the sidecar pair added nothing at p99"}
	if p99ok {
		added.Ratio, added.HasRatio, added.Met, added.Note = p99, true, summary.Check(p99 <= mtlsTarget), ""
	}
	perReq := summary.Row{Figure: "membrane proxy CPU per 1,000 requests", Value: cpu(m.cpuPer1k), Unit: "CPU-s",
		Peer: "mTLS sidecar pair", PeerValue: cpu(s.cpuPer1k), Target: target, Met: summary.NotEvaluated,
		Note: "no sidecar CPU measured"}
	if cpuok {
		perReq.Ratio, perReq.HasRatio, perReq.Met, perReq.Note = cpuRatio, true, summary.Check(cpuRatio <= mtlsTarget), ""
	}
	rows := []summary.Row{added, perReq}
	if len(r.arms) > 3 {
		h := r.arms[3].stats()
		if h.p99 > d.p99 && h.cpuPer1k > 0 {
			rows = append(rows,
				summary.Row{Figure: "membrane added p99", Value: µs(m.p99 - d.p99), Unit: "µs",
					Peer: "HBONE sidecar pair added p99", PeerValue: µs(h.p99 - d.p99), Met: summary.NoTarget}.WithRatio(),
				summary.Row{Figure: "membrane proxy CPU per 1,000 requests", Value: cpu(m.cpuPer1k), Unit: "CPU-s",
					Peer: "HBONE sidecar pair", PeerValue: h.cpuPer1k, Met: summary.NoTarget}.WithRatio())
		}
	}
	return rows
}

func TestMutualAuthSummary(t *testing.T) {
	arms := l7Arms(100*time.Microsecond, 250*time.Microsecond, 600*time.Microsecond)
	arms[1].cpuUsed, arms[2].cpuUsed = 3*time.Second, 2*time.Second
	arms[1].cpu = func() (time.Duration, error) { return 0, nil }
	arms[2].cpu = arms[1].cpu
	rows := checkRows(t, (&mtlsReport{arms: arms}).summary())
	if row := rows[[2]string{"membrane added p99", "mTLS sidecar pair added p99"}]; row.Ratio != 0.3 || row.Met != summary.Met {
		t.Errorf("added p99: %+v", row)
	}
	if row := rows[[2]string{"membrane proxy CPU per 1,000 requests", "mTLS sidecar pair"}]; row.Ratio != 1.5 || row.Met != summary.Missed {
		t.Errorf("CPU: %+v", row)
	}
}

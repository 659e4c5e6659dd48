package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

// summary: membrane's added p50 against the sidecar pair's (the target),
// and the proxies' CPU per request.
func (r *l7Report) summary() []summary.Row {
	d, m, s := r.arms[0].stats(), r.arms[1].stats(), r.arms[2].stats()
	added := summary.Row{Figure: "membrane added p50", Value: µs(m.p50 - d.p50), Unit: "µs",
		Peer: "sidecar pair added p50", PeerValue: µs(s.p50 - d.p50), Target: fmt.Sprintf("<= %.1fx", l7Target)}
	if ratio, ok := r.addedRatio(); ok {
		added.Ratio, added.HasRatio, added.Met = ratio, true, summary.Check(ratio <= l7Target)
	} else {
		added.Met, added.Note = summary.NotEvaluated, "the sidecar pair added nothing at p50"
	}
	rows := []summary.Row{added}
	if s.cpuPer1k > 0 {
		rows = append(rows, summary.Row{Figure: "membrane proxy CPU per 1,000 requests", Value: cpu(m.cpuPer1k), Unit: "CPU-s",
			Peer: "sidecar pair", PeerValue: s.cpuPer1k, Met: summary.NoTarget}.WithRatio())
	}
	return rows
}

func l7Arms(direct, membrane, sidecar time.Duration) []*l7Arm {
	var arms []*l7Arm
	for _, d := range []time.Duration{direct, membrane, sidecar} {
		arms = append(arms, &l7Arm{lat: []time.Duration{d, d, d}})
	}
	return arms
}

func TestL7Summary(t *testing.T) {
	rows := checkRows(t, (&l7Report{arms: l7Arms(100*time.Microsecond, 300*time.Microsecond, 600*time.Microsecond)}).summary())
	row := rows[[2]string{"membrane added p50", "sidecar pair added p50"}]
	if row.Value != 200 || row.PeerValue != 500 || row.Ratio != 0.4 || row.Met != summary.Met {
		t.Errorf("added p50: %+v", row)
	}
	rows = checkRows(t, (&l7Report{arms: l7Arms(100*time.Microsecond, 400*time.Microsecond, 600*time.Microsecond)}).summary())
	if row := rows[[2]string{"membrane added p50", "sidecar pair added p50"}]; row.Ratio != 0.6 || row.Met != summary.Missed {
		t.Errorf("added p50, 0.6x: %+v", row)
	}
	rows = checkRows(t, (&l7Report{arms: l7Arms(100*time.Microsecond, 90*time.Microsecond, 100*time.Microsecond)}).summary())
	if row := rows[[2]string{"membrane added p50", "sidecar pair added p50"}]; row.HasRatio || row.Met != summary.NotEvaluated {
		t.Errorf("sidecar pair added nothing: %+v", row)
	}
}

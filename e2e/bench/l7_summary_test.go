package bench

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

// summary: membrane's added p50, added p99 and CPU per request against
// the sidecar pair's, each with the target, as ratios() reports them.
func (r *l7Report) summary() []summary.Row {
	var rows []summary.Row
	for _, q := range r.ratios() {
		row := summary.Row{Figure: "membrane " + q.name, Value: math.Trunc(q.m / 1e3), Unit: "µs",
			Peer: "sidecar pair", PeerValue: math.Trunc(q.s / 1e3), Target: fmt.Sprintf("<= %.1fx", l7Target),
			Met: summary.NotEvaluated, Note: "the sidecar pair's is not positive"}
		if q.unit == "CPU" {
			row.Value, row.PeerValue, row.Unit = cpu(q.m), cpu(q.s), "CPU-s/1k requests"
		}
		if q.ok && !math.IsNaN(q.v) && !math.IsInf(q.v, 0) {
			row.Ratio, row.HasRatio, row.Met, row.Note = q.v, true, summary.Check(q.v <= l7Target), ""
		}
		rows = append(rows, row)
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
	row := rows[[2]string{"membrane added p50", "sidecar pair"}]
	if row.Value != 200 || row.PeerValue != 500 || row.Ratio != 0.4 || row.Met != summary.Met {
		t.Errorf("added p50: %+v", row)
	}
	rows = checkRows(t, (&l7Report{arms: l7Arms(100*time.Microsecond, 400*time.Microsecond, 600*time.Microsecond)}).summary())
	if row := rows[[2]string{"membrane added p99", "sidecar pair"}]; row.Ratio != 0.6 || row.Met != summary.Missed {
		t.Errorf("added p99, 0.6x: %+v", row)
	}
	rows = checkRows(t, (&l7Report{arms: l7Arms(100*time.Microsecond, 90*time.Microsecond, 100*time.Microsecond)}).summary())
	if row := rows[[2]string{"membrane added p50", "sidecar pair"}]; row.HasRatio || row.Met != summary.NotEvaluated {
		t.Errorf("sidecar pair added nothing: %+v", row)
	}
}

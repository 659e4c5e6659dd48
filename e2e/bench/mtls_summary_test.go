package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

// summary: per load shape, membrane's added p99 and CPU per request
// against the mTLS sidecar pair's (the targets), and against the reference
// pairs (no target).
func (r *mtlsReport) summary() []summary.Row {
	target := fmt.Sprintf("<= %.1fx", mtlsTarget)
	var rows []summary.Row
	for _, sh := range r.shapes {
		d, m := sh.arm(mtlsArmDirect).stats(), sh.arm(mtlsArmMembrane).stats()
		for _, ref := range []string{mtlsArmSidecar, mtlsArmSidecarLocal, mtlsArmHBONE} {
			a := sh.arm(ref)
			if a == nil {
				continue
			}
			o := a.stats()
			p99, cpuRatio, p99ok, cpuok := sh.ratio(ref)
			added := summary.Row{Figure: "membrane added p99, " + sh.name(), Value: µs(m.p99 - d.p99), Unit: "µs",
				Peer: ref + " added p99", PeerValue: µs(o.p99 - d.p99), Met: summary.NoTarget}
			perReq := summary.Row{Figure: "membrane proxy CPU per 1,000 requests, " + sh.name(), Value: cpu(m.cpuPer1k), Unit: "CPU-s",
				Peer: ref, PeerValue: cpu(o.cpuPer1k), Met: summary.NoTarget}
			if ref == mtlsArmSidecar {
				added.Target, added.Met, added.Note = target, summary.NotEvaluated, "the sidecar pair added nothing at p99"
				perReq.Target, perReq.Met, perReq.Note = target, summary.NotEvaluated, "no sidecar CPU measured"
			}
			if p99ok {
				added.Ratio, added.HasRatio, added.Note = p99, true, ""
				if added.Target != "" {
					added.Met = summary.Check(p99 <= mtlsTarget)
				}
			}
			if cpuok {
				perReq.Ratio, perReq.HasRatio, perReq.Note = cpuRatio, true, ""
				if perReq.Target != "" {
					perReq.Met = summary.Check(cpuRatio <= mtlsTarget)
				}
			}
			if ref != mtlsArmSidecar && (!p99ok || !cpuok) {
				continue // a reference pair that added nothing: nothing to compare
			}
			rows = append(rows, added, perReq)
		}
	}
	return rows
}

func TestMutualAuthSummary(t *testing.T) {
	sh := &mtlsShape{keepAlive: true}
	for _, a := range []struct {
		name     string
		lat, cpu time.Duration
	}{{mtlsArmDirect, 100 * time.Microsecond, 0}, {mtlsArmMembrane, 250 * time.Microsecond, 3 * time.Second}, {mtlsArmSidecar, 600 * time.Microsecond, 2 * time.Second}} {
		l := &l7Arm{name: a.name, lat: []time.Duration{a.lat, a.lat, a.lat}, cpuUsed: a.cpu}
		if a.cpu > 0 {
			l.cpu = func() (time.Duration, error) { return 0, nil }
		}
		sh.arms = append(sh.arms, &mtlsArm{l7Arm: l})
	}
	rows := checkRows(t, (&mtlsReport{shapes: []*mtlsShape{sh}}).summary())
	if row := rows[[2]string{"membrane added p99, keep-alive", "sidecar pair added p99"}]; row.Ratio != 0.3 || row.Met != summary.Met {
		t.Errorf("added p99: %+v", row)
	}
	if row := rows[[2]string{"membrane proxy CPU per 1,000 requests, keep-alive", "sidecar pair"}]; row.Ratio != 1.5 || row.Met != summary.Missed {
		t.Errorf("CPU: %+v", row)
	}
	if len(rows) != 2 {
		t.Errorf("%d rows, want 2: %v", len(rows), rows)
	}
}

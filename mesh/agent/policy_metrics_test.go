package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPhaseClock(t *testing.T) {
	start := time.Now()
	c := phaseClock{last: start}
	time.Sleep(time.Millisecond)
	c.lap(phaseResolve)
	end := c.lap(phasePrune)
	if c.d[phaseResolve] < time.Millisecond {
		t.Errorf("resolve took %s, want >= 1ms", c.d[phaseResolve])
	}
	var sum time.Duration
	for _, d := range c.d {
		sum += d
	}
	if sum != end.Sub(start) {
		t.Errorf("phases add up to %s, the regeneration took %s", sum, end.Sub(start))
	}
	if got := c.LogValue().String(); !strings.Contains(got, "resolve=") || !strings.Contains(got, "prune=") {
		t.Errorf("log value %q: want every phase by name", got)
	}

	reg := prometheus.NewRegistry()
	m := newPolicyMetrics(reg)
	m.observePhases(&c)
	if n := testutil.CollectAndCount(m.phaseSeconds); n != int(phases) {
		t.Errorf("%d phase series, want %d", n, phases)
	}
	for p := range phases {
		if name := p.String(); strings.HasPrefix(name, "phase(") {
			t.Errorf("phase %d has no name", p)
		}
	}
}

package flow

import (
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricLines returns the text exposition's samples of the metrics whose
// names start with prefix.
func metricLines(t *testing.T, reg *prometheus.Registry, prefix string) []string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var out []string
	for l := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(l, prefix) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// metricValue returns the value of one sample ("name{labels}").
func metricValue(t *testing.T, reg *prometheus.Registry, sample string) float64 {
	t.Helper()
	for _, l := range metricLines(t, reg, sample) {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s", sample)
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	s := NewStore(4, m)
	for _, f := range filterFlows() {
		s.Add(f)
	}
	m.DatapathLost(100) // baseline: pinned counters outlive the agent
	m.DatapathLost(130)
	m.DatapathLost(5) // the datapath was reloaded
	want := []string{
		`membrane_flow_drops_total{protocol="TCP",reason="POLICY_DENIED"} 1`,
		`membrane_flow_lost_events_total{source="datapath"} 35`,
		`membrane_flow_lost_events_total{source="subscriber"} 0`,
		`membrane_flow_policy_verdicts_total{direction="",match="none",verdict="DROPPED"} 1`,
		`membrane_flow_processed_total{type="drop",verdict="DROPPED"} 1`,
		`membrane_flow_processed_total{type="l7",verdict="FORWARDED"} 1`,
		`membrane_flow_processed_total{type="trace",verdict="FORWARDED"} 3`,
		`membrane_flow_processed_total{type="trace",verdict="REDIRECTED"} 1`,
		`membrane_flow_subscribers 0`,
	}
	if got := metricLines(t, reg, "membrane_flow_"); !slices.Equal(got, want) {
		t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var nilMetrics *Metrics // counts nothing, does not panic
	nilMetrics.DatapathLost(1)
	NewStore(1, nil).Add(seqFlow(1))
}

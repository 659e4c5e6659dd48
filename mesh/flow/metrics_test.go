package flow

import (
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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

func TestHTTPMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	s := NewStore(16, m)
	// Their Hubble-style request flow ("fe->be http") is no completed request: not counted.
	for _, f := range httpFilterFlows() {
		s.Add(f)
	}
	s.Add(FromHTTPLog(HTTPLog{Source: frontendSrc, Destination: backendDst, Method: "PROPFIND", Code: 207,
		Duration: 7 * time.Second}, "node-1", testEnrich))
	wantRequests := []string{
		`membrane_http_requests_total{method="DELETE",status="403",verdict="DROPPED"} 1`,
		`membrane_http_requests_total{method="GET",status="200",verdict="FORWARDED"} 1`,
		`membrane_http_requests_total{method="GET",status="404",verdict="FORWARDED"} 1`,
		`membrane_http_requests_total{method="GET",status="503",verdict="FORWARDED"} 1`,
		`membrane_http_requests_total{method="POST",status="201",verdict="FORWARDED"} 1`,
		`membrane_http_requests_total{method="other",status="207",verdict="FORWARDED"} 1`,
	}
	if got := metricLines(t, reg, "membrane_http_requests_total"); !slices.Equal(got, wantRequests) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantRequests, "\n"))
	}
	for sample, want := range map[string]float64{
		`membrane_http_request_duration_seconds_count{method="GET"}`:                       3,
		`membrane_http_request_duration_seconds_sum{method="GET"}`:                         0.003,
		`membrane_http_request_duration_seconds_bucket{method="GET",le="0.0005"}`:          0,
		`membrane_http_request_duration_seconds_bucket{method="GET",le="0.001"}`:           3,
		`membrane_http_request_duration_seconds_bucket{method="other",le="5"}`:             0,
		`membrane_http_request_duration_seconds_bucket{method="other",le="10"}`:            1,
		`membrane_flow_drops_total{protocol="TCP",reason="POLICY_DENIED"}`:                 2, // the L4 drop and the L7 denial
		`membrane_flow_policy_verdicts_total{direction="",match="none",verdict="DROPPED"}`: 1, // the L4 drop only
		`membrane_flow_processed_total{type="l7",verdict="DROPPED"}`:                       1,
	} {
		if got := metricValue(t, reg, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
}

package dnsproxy

import "github.com/prometheus/client_golang/prometheus"

// metrics are the proxy's Prometheus metrics; the agent registers them
// (Proxy.Collector).
type metrics struct {
	responses *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	overload  prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "dns_proxy", Name: "responses_total",
			Help: "DNS queries the proxy handled, by the response code the client got (NONE: no response) and verdict.",
		}, []string{"rcode", "verdict"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "dns_proxy", Name: "request_seconds",
			Help:    "Time from a query's arrival to its response (the server's time included), by verdict.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"verdict"}),
		overload: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "dns_proxy", Name: "overload_drops_total",
			Help: "DNS queries dropped unread because the proxy was handling too many at once.",
		}),
	}
}

func (m *metrics) observe(a Answer) {
	m.responses.WithLabelValues(a.RCodeName(), string(a.Verdict)).Inc()
	m.duration.WithLabelValues(string(a.Verdict)).Observe(a.Duration.Seconds())
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.responses.Describe(ch)
	m.duration.Describe(ch)
	m.overload.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.responses.Collect(ch)
	m.duration.Collect(ch)
	m.overload.Collect(ch)
}

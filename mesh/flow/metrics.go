package flow

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// LostSource says where flows were lost.
type LostSource string

// Where flows get lost.
const (
	// LostDatapath: the datapath's ring buffer was full (the agent reads
	// too slowly); bpf/policy's Counters().EventsLost.
	LostDatapath LostSource = "datapath"
	// LostSubscriber: a following reader lagged and its buffer was full.
	LostSubscriber LostSource = "subscriber"
)

// Metrics are the flow metrics, on an injected registry. A nil *Metrics
// is valid and counts nothing.
type Metrics struct {
	processed   *prometheus.CounterVec
	drops       *prometheus.CounterVec
	verdicts    *prometheus.CounterVec
	lostEvents  *prometheus.CounterVec
	subscribing prometheus.Gauge
	httpReqs    *prometheus.CounterVec
	httpTime    *prometheus.HistogramVec
	dnsReqs     *prometheus.CounterVec

	mu           sync.Mutex
	datapathSeen uint64 // last total DatapathLost got
	datapathInit bool   // datapathSeen is set
}

// NewMetrics registers the flow metrics on reg:
//
//	membrane_flow_processed_total{type,verdict}   flows observed
//	membrane_flow_drops_total{reason,protocol}    dropped flows, by Hubble's drop reason name
//	membrane_flow_policy_verdicts_total{direction,match,verdict}  new flows policy decided, by the match that decided
//	membrane_flow_lost_events_total{source}       flows lost (datapath ring buffer, slow followers)
//	membrane_flow_subscribers                     observe clients following
//	membrane_http_requests_total{method,status,verdict}  HTTP requests the L7 proxy completed
//	membrane_http_request_duration_seconds{method}       their durations
//	membrane_dns_requests_total{rcode,verdict}           DNS questions the DNS proxy handled
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "flow", Name: "processed_total",
			Help: "Flows observed, by type (trace, drop, l7) and verdict.",
		}, []string{"type", "verdict"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "flow", Name: "drops_total",
			Help: "Dropped flows, by drop reason (Hubble's names, e.g. POLICY_DENIED) and protocol.",
		}, []string{"reason", "protocol"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "flow", Name: "policy_verdicts_total",
			Help: "New flows policy decided, by direction, match type (L3-Only, L3-L4, L4-Only, all; none when no entry matched) and verdict.",
		}, []string{"direction", "match", "verdict"}),
		lostEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "flow", Name: "lost_events_total",
			Help: "Flows lost: datapath (the ring buffer was full) or subscriber (an observe client lagged).",
		}, []string{"source"}),
		subscribing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "flow", Name: "subscribers",
			Help: "Observe clients following the flow store.",
		}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests the L7 proxy completed, by method (standard ones, else other), status code and verdict (DROPPED: the L7 policy denied it).",
		}, []string{"method", "status", "verdict"}),
		httpTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Duration of the HTTP requests the L7 proxy completed, first request byte to last response byte, by method.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"method"}),
		dnsReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "dns", Name: "requests_total",
			Help: "DNS questions the DNS proxy handled, by the response code the client got (NONE: no response) and verdict (FORWARDED; DROPPED: refused by the DNS rules; ERROR).",
		}, []string{"rcode", "verdict"}),
	}
	for _, s := range []LostSource{LostDatapath, LostSubscriber} {
		m.lostEvents.WithLabelValues(string(s))
	}
	reg.MustRegister(m.processed, m.drops, m.verdicts, m.lostEvents, m.subscribing, m.httpReqs, m.httpTime, m.dnsReqs)
	return m
}

// observe counts one flow (Store.Add calls it).
func (m *Metrics) observe(f *Flow) {
	if m == nil {
		return
	}
	m.processed.WithLabelValues(string(f.Type), string(f.Verdict)).Inc()
	if f.DropReason != nil {
		m.drops.WithLabelValues(f.DropReason.Name, string(f.L4.Protocol)).Inc()
	}
	if policyDecided(f) {
		match := f.PolicyMatch
		if match == "" {
			match = "none"
		}
		m.verdicts.WithLabelValues(string(f.Direction), match, string(f.Verdict)).Inc()
	}
	if l7 := f.L7; l7 != nil && l7.HTTP != nil && l7.Type == L7Response {
		method := methodLabel(l7.HTTP.Method)
		m.httpReqs.WithLabelValues(method, strconv.Itoa(l7.HTTP.Code), string(f.Verdict)).Inc()
		m.httpTime.WithLabelValues(method).Observe(l7.Latency.Seconds())
	}
	if l7 := f.L7; l7 != nil && l7.DNS != nil {
		m.dnsReqs.WithLabelValues(l7.DNS.RCode, string(f.Verdict)).Inc()
	}
}

// methodLabel keeps the method label's values few: the standard methods,
// else "other".
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}

func (m *Metrics) lost(s LostSource, n uint64) {
	if m == nil || n == 0 {
		return
	}
	m.lostEvents.WithLabelValues(string(s)).Add(float64(n))
}

func (m *Metrics) subscribers(n int) {
	if m == nil {
		return
	}
	m.subscribing.Set(float64(n))
}

// DatapathLost takes the datapath's running total of lost events (as
// bpf/policy's Counters().EventsLost, polled) and counts what is new since
// the last call. The first call only takes the baseline (pinned counters
// outlive agent restarts); a smaller total (the datapath was reloaded)
// counts whole.
func (m *Metrics) DatapathLost(total uint64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delta := total
	switch {
	case !m.datapathInit:
		delta, m.datapathInit = 0, true
	case total >= m.datapathSeen:
		delta = total - m.datapathSeen
	}
	m.datapathSeen = total
	m.mu.Unlock()
	m.lost(LostDatapath, delta)
}

// policyDecided: the flow's verdict came from the datapath's policy lookup
// (a match, or a policy drop), not from conntrack. L7 flows are not new
// flows: their denials count in drops_total and http_requests_total.
func policyDecided(f *Flow) bool {
	return f.Type != TypeL7 && (f.PolicyMatch != "" || f.DropReason != nil && strings.HasPrefix(f.DropReason.Name, "POLICY_"))
}

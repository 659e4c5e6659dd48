package flow

import (
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
	}
	for _, s := range []LostSource{LostDatapath, LostSubscriber} {
		m.lostEvents.WithLabelValues(string(s))
	}
	reg.MustRegister(m.processed, m.drops, m.verdicts, m.lostEvents, m.subscribing)
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

// policyDecided: the flow's verdict came from a policy lookup (a match, or
// a policy drop), not from conntrack.
func policyDecided(f *Flow) bool {
	return f.PolicyMatch != "" || f.DropReason != nil && strings.HasPrefix(f.DropReason.Name, "POLICY_")
}

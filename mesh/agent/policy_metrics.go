package agent

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
)

// policyMetrics are the policy datapath's metrics.
type policyMetrics struct {
	regenerations       *prometheus.CounterVec
	regenerationSeconds prometheus.Histogram
	changeToEnforced    prometheus.Histogram
	phaseSeconds        *prometheus.HistogramVec
	endpoints           *prometheus.GaugeVec
	invalidPolicies     prometheus.Gauge
	verdicts            *prometheus.GaugeVec
	drops               *prometheus.GaugeVec
	mapEntries          *prometheus.GaugeVec
	mapPressure         *prometheus.GaugeVec
	hostRouted          prometheus.Gauge
	uplinkRouted        prometheus.Gauge
	rechecked           prometheus.Gauge
}

// policyLatencyBuckets are the bounds, in seconds, of the histograms of a
// regeneration's and a change's time: fine between 1 and 50 ms, where they
// fall, with a bound at 10 ms (a latency target's) so that "how many
// within 10 ms" is read exactly, not interpolated.
func policyLatencyBuckets() []float64 {
	return []float64{
		0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.012, 0.015,
		0.020, 0.025, 0.030, 0.040, 0.050, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5,
	}
}

func newPolicyMetrics(reg prometheus.Registerer) *policyMetrics {
	m := &policyMetrics{
		regenerations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "policy", Name: "regenerations_total",
			Help: "Regenerations of every local endpoint's policy, by outcome.",
		}, []string{"outcome"}),
		regenerationSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "policy", Name: "regeneration_seconds",
			Help:    "Time to resolve and write the policy of every local endpoint.",
			Buckets: policyLatencyBuckets(),
		}),
		changeToEnforced: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "policy", Name: "change_to_enforced_seconds",
			Help:    "From a change of policy, pod, identity or node seen by the agent to the datapath enforcing it.",
			Buckets: policyLatencyBuckets(),
		}),
		phaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "policy", Name: "regeneration_phase_seconds",
			Help:    "Time a regeneration spent in each of its phases (resolve, ipcache, discover, proxy, endpoints, prune).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"phase"}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "policy", Name: "endpoints",
			Help: "Local endpoints by state (ready, waiting-for-identity, waiting-for-interface, waiting-for-proxy, error).",
		}, []string{"state"}),
		invalidPolicies: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "policy", Name: "invalid_objects",
			Help: "Policy objects whose current version is invalid (their last valid version is enforced).",
		}),
		verdicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "policy_packets",
			Help: "Packets through the policy programs since the maps were created, by direction and verdict.",
		}, []string{"direction", "verdict"}),
		drops: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "drops",
			Help: "Packets the policy programs dropped since the maps were created, by direction and reason.",
		}, []string{"direction", "reason"}),
		mapEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "map_entries",
			Help: "Entries of the policy datapath's maps.",
		}, []string{"map"}),
		mapPressure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "map_pressure",
			Help: "Fill ratio (entries / max entries) of the policy datapath's maps.",
		}, []string{"map"}),
		hostRouted: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "host_routed_packets",
			Help: "Packets delivered to a pod of the node by host routing (skipping the node's stack), from its pods and from other nodes, since the maps were created.",
		}),
		uplinkRouted: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "host_routed_from_uplink_packets",
			Help: "Of the host-routed packets, those from other nodes (received on the node's uplink).",
		}),
		rechecked: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "rechecked_flows",
			Help: "Times an open flow was checked against the policy again after a policy change, since the maps were created.",
		}),
	}
	// The datapath's gauges (verdicts, drops, hostRouted, rechecked,
	// mapEntries, mapPressure) are filled at scrape time: see Agent.datapathGauges.
	reg.MustRegister(m.regenerations, m.regenerationSeconds, m.changeToEnforced, m.phaseSeconds, m.endpoints, m.invalidPolicies)
	return m
}

// datapathGauges are the gauges datapath fills.
func (m *policyMetrics) datapathGauges() []prometheus.Collector {
	return []prometheus.Collector{m.verdicts, m.drops, m.hostRouted, m.uplinkRouted, m.rechecked, m.mapEntries, m.mapPressure}
}

// datapath exports the policy programs' counters and map usage.
func (m *policyMetrics) datapath(dp *bpfpolicy.Datapath) error {
	c, err := dp.Counters()
	if err != nil {
		return err
	}
	for _, d := range []bpfpolicy.Direction{bpfpolicy.Ingress, bpfpolicy.Egress} {
		dc := c.Direction(d)
		m.verdicts.WithLabelValues(d.String(), "forwarded").Set(float64(dc.Forwarded.Packets))
		m.verdicts.WithLabelValues(d.String(), "redirected").Set(float64(dc.Redirected.Packets))
		var dropped uint64
		for r, n := range dc.Dropped {
			m.drops.WithLabelValues(d.String(), r.Name()).Set(float64(n.Packets))
			dropped += n.Packets
		}
		m.verdicts.WithLabelValues(d.String(), "dropped").Set(float64(dropped))
	}
	m.hostRouted.Set(float64(c.HostRouted))
	m.uplinkRouted.Set(float64(c.UplinkRouted))
	m.rechecked.Set(float64(c.CTRechecked))
	usage, err := dp.Count()
	if err != nil {
		return err
	}
	for _, u := range usage {
		m.mapEntries.WithLabelValues(u.Name).Set(float64(u.Entries))
		if u.MaxEntries > 0 {
			m.mapPressure.WithLabelValues(u.Name).Set(float64(u.Entries) / float64(u.MaxEntries))
		}
	}
	return nil
}

// phase is a phase of a regeneration.
type phase int

// The phases of a regeneration, in their order.
const (
	phaseResolve phase = iota
	phaseIPCache
	phaseDiscover
	phaseProxy
	phaseEndpoints
	phasePrune
	phases
)

func (p phase) String() string {
	switch p {
	case phaseResolve:
		return "resolve"
	case phaseIPCache:
		return "ipcache"
	case phaseDiscover:
		return "discover"
	case phaseProxy:
		return "proxy"
	case phaseEndpoints:
		return "endpoints"
	case phasePrune:
		return "prune"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// phaseClock times a regeneration's phases.
type phaseClock struct {
	last time.Time
	d    [phases]time.Duration
}

// lap ends phase p now and returns the time.
func (c *phaseClock) lap(p phase) time.Time {
	now := time.Now()
	c.d[p] += now.Sub(c.last)
	c.last = now
	return now
}

// LogValue lists the phases' durations.
func (c *phaseClock) LogValue() slog.Value {
	attrs := make([]slog.Attr, phases)
	for p, d := range c.d {
		attrs[p] = slog.Duration(phase(p).String(), d)
	}
	return slog.GroupValue(attrs...)
}

// observePhases records a regeneration's phase durations.
func (m *policyMetrics) observePhases(c *phaseClock) {
	for p, d := range c.d {
		m.phaseSeconds.WithLabelValues(phase(p).String()).Observe(d.Seconds())
	}
}

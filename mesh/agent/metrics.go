package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's Prometheus metrics, on an injected registry.
type metrics struct {
	skipped       *prometheus.CounterVec
	services      prometheus.Gauge
	syncs         *prometheus.CounterVec
	syncDuration  prometheus.Histogram
	datapathStats *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "agent", Name: "skipped_input_total",
			Help: "Objects or fields the agent could not use and skipped, by kind.",
		}, []string{"kind"}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "lb", Name: "frontends",
			Help: "Service frontends programmed in the datapath.",
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "lb", Name: "service_syncs_total",
			Help: "Services written to the datapath, by outcome.",
		}, []string{"outcome"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "lb", Name: "service_sync_seconds",
			Help:    "Time to translate and program one service.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		datapathStats: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "datapath", Name: "socklb_events",
			Help: "Socket load-balancer events counted by the eBPF programs since they were loaded.",
		}, []string{"event"}),
	}
	// services and datapathStats are filled at scrape time: see
	// Agent.datapathGauges.
	reg.MustRegister(m.skipped, m.syncs, m.syncDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

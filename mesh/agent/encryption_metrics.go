package agent

import "github.com/prometheus/client_golang/prometheus"

// encryptionMetrics are the WireGuard metrics, on the agent's registry.
type encryptionMetrics struct {
	peers            prometheus.Gauge
	skippedPeers     prometheus.Gauge
	handshakes       prometheus.Counter
	rotations        *prometheus.CounterVec
	reconfigs        *prometheus.CounterVec
	reconcileSeconds prometheus.Histogram
	bytes            *prometheus.GaugeVec
	backend          *prometheus.GaugeVec
}

func newEncryptionMetrics(reg prometheus.Registerer) *encryptionMetrics {
	m := &encryptionMetrics{
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "peers",
			Help: "WireGuard peers configured on this node's device.",
		}),
		skippedPeers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "skipped_peers",
			Help: "Nodes publishing a WireGuard key (or addresses) that cannot be used, left out of the peers.",
		}),
		handshakes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "handshakes_total",
			Help: "Completed WireGuard handshakes seen on the device (sampled every 5 s).",
		}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "key_rotations_total",
			Help: "Rotations of this node's WireGuard key, by trigger (api, period).",
		}, []string{"trigger"}),
		reconfigs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "reconciles_total",
			Help: "WireGuard reconciliations, by outcome (changed, unchanged, error).",
		}, []string{"outcome"}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "reconcile_seconds",
			Help:    "Time to reconcile the WireGuard device and routes with the nodes.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "transfer_bytes",
			Help: "Bytes received (rx) and sent (tx) through the device's current peers.",
		}, []string{"direction"}),
		backend: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "membrane", Subsystem: "wireguard", Name: "device_info",
			Help: "1 for the backend running the device (kernel or embedded).",
		}, []string{"backend"}),
	}
	reg.MustRegister(m.peers, m.skippedPeers, m.handshakes, m.rotations, m.reconfigs, m.reconcileSeconds, m.bytes, m.backend)
	return m
}

package svid

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
)

// Signer has a CA sign a certificate signing request.
type Signer interface {
	// Sign returns the SVID chain for csr (DER) and the CA's bundle.
	Sign(ctx context.Context, csr []byte) ([]*x509.Certificate, *x509bundle.Bundle, error)
}

// Metrics count the manager's work.
type Metrics struct {
	Issued   prometheus.Counter // first SVID of an ID
	Renewed  prometheus.Counter
	Failures prometheus.Counter
	Bundles  prometheus.Counter // bundle changes
	SVIDs    prometheus.Gauge
}

// NewMetrics registers the manager's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Issued:   prometheus.NewCounter(prometheus.CounterOpts{Name: "membrane_svid_issued_total", Help: "X.509-SVIDs obtained for a workload identity new on this node."}),
		Renewed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "membrane_svid_renewed_total", Help: "X.509-SVIDs renewed (rotated) before they expired."}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "membrane_svid_failures_total", Help: "Failed SVID requests to the CA."}),
		Bundles:  prometheus.NewCounter(prometheus.CounterOpts{Name: "membrane_svid_bundle_changes_total", Help: "Trust bundle changes (CA rotations)."}),
		SVIDs:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "membrane_svids", Help: "X.509-SVIDs this node holds."}),
	}
	reg.MustRegister(m.Issued, m.Renewed, m.Failures, m.Bundles, m.SVIDs)
	return m
}

// Manager keeps one current X.509-SVID for every wanted SPIFFE ID: it
// generates the key on the node, has the CA sign a CSR, renews at half the
// SVID's life, and drops the SVIDs of IDs no longer wanted. It is a Source.
type Manager struct {
	log     *slog.Logger
	td      spiffeid.TrustDomain
	signer  Signer
	metrics *Metrics
	now     func() time.Time

	mu      sync.Mutex
	want    map[spiffeid.ID]bool
	svids   map[spiffeid.ID]*x509svid.SVID
	retry   map[spiffeid.ID]retryState
	bundle  *x509bundle.Bundle
	version uint64
	changed chan struct{}
	wake    chan struct{}
}

type retryState struct {
	at      time.Time
	backoff time.Duration
}

const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// NewManager returns a manager for trust domain td.
func NewManager(log *slog.Logger, td spiffeid.TrustDomain, signer Signer, metrics *Metrics) *Manager {
	return &Manager{
		log: log, td: td, signer: signer, metrics: metrics, now: time.Now,
		want: map[spiffeid.ID]bool{}, svids: map[spiffeid.ID]*x509svid.SVID{}, retry: map[spiffeid.ID]retryState{},
		bundle: x509bundle.New(td), changed: make(chan struct{}), wake: make(chan struct{}, 1),
	}
}

// Snapshot implements Source.
func (m *Manager) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Snapshot{SVIDs: maps.Clone(m.svids), Bundle: m.bundle, Version: m.version}
}

// Changed implements Source.
func (m *Manager) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// GetX509BundleForTrustDomain makes the manager an x509bundle.Source.
func (m *Manager) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if td != m.td || m.bundle.Empty() {
		return nil, fmt.Errorf("no trust bundle for %s", td)
	}
	return m.bundle, nil
}

// bump publishes a change; m.mu is held.
func (m *Manager) bump() {
	m.version++
	close(m.changed)
	m.changed = make(chan struct{})
	m.metrics.SVIDs.Set(float64(len(m.svids)))
}

// SetWanted sets the SPIFFE IDs to keep SVIDs for; the SVIDs of others are
// dropped at once.
func (m *Manager) SetWanted(ids []spiffeid.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := make(map[spiffeid.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	if maps.Equal(want, m.want) {
		return
	}
	m.want = want
	dropped := false
	for id := range m.svids {
		if !want[id] {
			delete(m.svids, id)
			dropped = true
			m.log.Info("svid dropped", "id", id.String())
		}
	}
	for id := range m.retry {
		if !want[id] {
			delete(m.retry, id)
		}
	}
	if dropped {
		m.bump()
	}
	m.poke()
}

// SetBundle replaces the trust bundle (from the CA's published bundle).
func (m *Manager) SetBundle(b *x509bundle.Bundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setBundle(b)
}

func (m *Manager) setBundle(b *x509bundle.Bundle) {
	if b == nil || b.TrustDomain() != m.td || b.Equal(m.bundle) {
		return
	}
	m.bundle = b
	m.metrics.Bundles.Inc()
	m.bump()
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run keeps the SVIDs until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		next := m.renewDue(ctx)
		if ctx.Err() != nil {
			return
		}
		t.Reset(max(next.Sub(m.now()), 0))
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-t.C:
		}
	}
}

// renewDue requests every SVID that is missing or at half its life and
// returns when to look again.
func (m *Manager) renewDue(ctx context.Context) time.Time {
	now := m.now()
	next := now.Add(time.Hour)
	m.mu.Lock()
	var due []spiffeid.ID
	for id := range m.want {
		at := now
		if s := m.svids[id]; s != nil {
			leaf := s.Certificates[0]
			at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		}
		if r, ok := m.retry[id]; ok && r.at.After(at) {
			at = r.at
		}
		if at.After(now) {
			next = minTime(next, at)
			continue
		}
		due = append(due, id)
	}
	m.mu.Unlock()
	for _, id := range due {
		if ctx.Err() != nil {
			return now
		}
		next = minTime(next, m.fetch(ctx, id))
	}
	return next
}

// fetch obtains an SVID for id and returns when to look at id again:
// its renewal time, or on failure when to retry.
func (m *Manager) fetch(ctx context.Context, id spiffeid.ID) time.Time {
	key, csr, err := spiffe.NewCSR(id)
	var s *x509svid.SVID
	var bundle *x509bundle.Bundle
	if err == nil {
		var chain []*x509.Certificate
		chain, bundle, err = m.signer.Sign(ctx, csr)
		if err == nil {
			s, err = spiffe.NewSVID(chain, key)
		}
		if err == nil && s.ID != id {
			err = fmt.Errorf("the CA issued %s", s.ID)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.metrics.Failures.Inc()
		r := m.retry[id]
		r.backoff = min(max(r.backoff*2, minBackoff), maxBackoff)
		r.at = m.now().Add(r.backoff)
		m.retry[id] = r
		m.log.Warn("svid request failed", "id", id.String(), "retry_in", r.backoff, "error", err)
		return r.at
	}
	delete(m.retry, id)
	if !m.want[id] {
		return m.now().Add(time.Hour) // its last pod went while we asked
	}
	if _, renewed := m.svids[id]; renewed {
		m.metrics.Renewed.Inc()
	} else {
		m.metrics.Issued.Inc()
	}
	m.svids[id] = s
	// The signer's bundle includes the CA that signed s: take it when it
	// is news, so that s always verifies against the published bundle.
	if !bundleHasAll(m.bundle, bundle) {
		merged := m.bundle.Clone()
		for _, c := range bundle.X509Authorities() {
			merged.AddX509Authority(c)
		}
		m.setBundle(merged)
	}
	m.bump()
	leaf := s.Certificates[0]
	m.log.Debug("svid obtained", "id", id.String(), "expires", leaf.NotAfter)
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

func bundleHasAll(have, b *x509bundle.Bundle) bool {
	for _, c := range b.X509Authorities() {
		if !have.HasX509Authority(c) {
			return false
		}
	}
	return true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

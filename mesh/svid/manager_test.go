package svid

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// caSigner signs with a real authority and a fake clock.
type caSigner struct {
	mu   sync.Mutex
	ca   *spiffe.Authority
	now  func() time.Time
	fail bool
	n    int
}

func (s *caSigner) Sign(_ context.Context, csr []byte) ([]*x509.Certificate, *x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if s.fail {
		return nil, nil, errors.New("CA down")
	}
	r, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, nil, err
	}
	id, err := spiffeid.FromURI(r.URIs[0])
	if err != nil {
		return nil, nil, err
	}
	chain, err := s.ca.SignCSR(csr, id, s.now(), time.Hour)
	return chain, x509bundle.FromX509Authorities(td, []*x509.Certificate{s.ca.Cert}), err
}

func TestManager(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ca, err := spiffe.NewAuthority(td, now, 100*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer := &caSigner{ca: ca, now: clock}
	m := NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), td, signer, NewMetrics(prometheus.NewRegistry()))
	m.now = clock
	ctx := context.Background()
	a := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/a")
	b := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/b")

	changed := m.Changed()
	m.SetWanted([]spiffeid.ID{a, b})
	m.renewDue(ctx)
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed after new SVIDs")
	}
	snap := m.Snapshot()
	if len(snap.SVIDs) != 2 || snap.SVIDs[a].ID != a || snap.Bundle.Empty() {
		t.Fatalf("snapshot: %d svids, bundle empty %v", len(snap.SVIDs), snap.Bundle.Empty())
	}
	first := snap.SVIDs[a].Certificates[0]

	// Before half life nothing is renewed; after it, both are.
	now = now.Add(20 * time.Minute)
	m.renewDue(ctx)
	if got := m.Snapshot().SVIDs[a].Certificates[0]; !got.Equal(first) {
		t.Fatal("renewed before half life")
	}
	now = now.Add(11 * time.Minute)
	next := m.renewDue(ctx)
	renewed := m.Snapshot()
	if renewed.SVIDs[a].Certificates[0].Equal(first) || renewed.Version <= snap.Version {
		t.Fatal("not renewed after half life")
	}
	if want := now.Add(30 * time.Minute); next.Sub(want) > 2*time.Minute || want.Sub(next) > 2*time.Minute {
		t.Fatalf("next look at %s, want about %s", next, want)
	}
	if got := testutil.ToFloat64(m.metrics.Renewed); got != 2 {
		t.Fatalf("renewed = %v, want 2", got)
	}

	// The last pod of b goes: its SVID goes at once.
	m.SetWanted([]spiffeid.ID{a})
	if _, ok := m.Snapshot().SVIDs[b]; ok {
		t.Fatal("svid of an unwanted id kept")
	}

	// A failing CA is retried with backoff, and the old SVID is kept.
	signer.fail = true
	now = now.Add(31 * time.Minute)
	n := signer.n
	m.renewDue(ctx)
	m.renewDue(ctx)
	if signer.n != n+1 {
		t.Fatalf("%d requests within the backoff, want 1", signer.n-n)
	}
	if _, ok := m.Snapshot().SVIDs[a]; !ok {
		t.Fatal("svid dropped on CA failure")
	}
	signer.fail = false
	now = now.Add(minBackoff)
	m.renewDue(ctx)
	if m.Snapshot().SVIDs[a].Certificates[0].NotBefore.Before(now.Add(-2 * time.Minute)) {
		t.Fatal("not renewed after the CA came back")
	}
}

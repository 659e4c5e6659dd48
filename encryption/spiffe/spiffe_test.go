package spiffe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

var policy = Policy{CATTL: 30 * time.Hour, MaxSVIDTTL: time.Hour, Propagation: time.Minute}

func TestWorkloadID(t *testing.T) {
	id, err := WorkloadID(td, "demo", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := id.String(); got != "spiffe://cluster.local/ns/demo/sa/default" {
		t.Fatalf("WorkloadID = %s", got)
	}
	ns, sa, err := ParseWorkloadID(td, id)
	if err != nil || ns != "demo" || sa != "default" {
		t.Fatalf("ParseWorkloadID = %q %q %v", ns, sa, err)
	}
	for _, bad := range []string{
		"spiffe://other.domain/ns/demo/sa/x",
		"spiffe://cluster.local/membrane/ca",
		"spiffe://cluster.local/ns/demo/sa/x/y",
		"spiffe://cluster.local/ns/demo/xx/x",
	} {
		if _, _, err := ParseWorkloadID(td, spiffeid.RequireFromString(bad)); err == nil {
			t.Errorf("ParseWorkloadID(%s): no error", bad)
		}
	}
}

func TestStepRotation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, changed, err := Step(State{}, td, policy, now, false)
	if err != nil || !changed || s.Active == nil {
		t.Fatalf("first step: %v %v", changed, err)
	}
	first := s.Active
	if s, changed, _ = Step(s, td, policy, now.Add(time.Hour), false); changed {
		t.Fatal("step without cause changed the state")
	}
	// A requested rotation prepares a CA that is trusted before it signs.
	s, changed, _ = Step(s, td, policy, now.Add(time.Hour), true)
	if !changed || s.Next == nil || s.Active != first {
		t.Fatalf("rotate: changed %v next %v active changed %v", changed, s.Next != nil, s.Active != first)
	}
	if n := len(s.Bundle(td).X509Authorities()); n != 2 {
		t.Fatalf("bundle during propagation: %d CAs, want 2", n)
	}
	s = roundTrip(t, s)
	s, changed, _ = Step(s, td, policy, now.Add(time.Hour+time.Minute), false)
	if !changed || s.Next != nil || s.Active.Cert.Equal(first.Cert) || len(s.Retired) != 1 {
		t.Fatalf("activate: changed %v next %v retired %d", changed, s.Next != nil, len(s.Retired))
	}
	s = roundTrip(t, s)
	// The old CA stays trusted while its SVIDs may live, then goes.
	s, _, _ = Step(s, td, policy, now.Add(2*time.Hour), false)
	if len(s.Retired) != 1 || len(s.Bundle(td).X509Authorities()) != 2 {
		t.Fatalf("old CA dropped too early: %d retired", len(s.Retired))
	}
	s, changed, _ = Step(s, td, policy, now.Add(2*time.Hour+2*time.Minute), false)
	if !changed || len(s.Retired) != 0 || len(s.Bundle(td).X509Authorities()) != 1 {
		t.Fatalf("old CA kept too long: %d retired", len(s.Retired))
	}
	// An aging CA rotates by itself.
	s, changed, _ = Step(s, td, policy, s.Active.Cert.NotBefore.Add(21*time.Hour), false)
	if !changed || s.Next == nil {
		t.Fatal("aging CA did not rotate")
	}
}

func roundTrip(t *testing.T, s State) State {
	t.Helper()
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Active.Cert.Equal(s.Active.Cert) || (s.Next == nil) != (got.Next == nil) || !got.ActivateAt.Equal(s.ActivateAt) || len(got.Retired) != len(s.Retired) {
		t.Fatalf("state changed in encode/decode")
	}
	return got
}

func TestDecodeStateRejectsMismatchedKey(t *testing.T) {
	now := time.Now()
	a, _, _ := Step(State{}, td, policy, now, false)
	b, _, _ := Step(State{}, td, policy, now, false)
	da, _ := a.Encode()
	db, _ := b.Encode()
	da[SecretCAKey] = db[SecretCAKey]
	if _, err := DecodeState(da); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("DecodeState with another CA's key: %v", err)
	}
}

type fakeAgents map[string]string // token → node

func (f fakeAgents) AgentNode(_ context.Context, token string) (string, error) {
	if n, ok := f[token]; ok {
		return n, nil
	}
	return "", ErrUnauthenticated
}

type fakePlacement map[string]bool // node/ns/sa

func (f fakePlacement) HasPod(_ context.Context, node, ns, sa string) (bool, error) {
	return f[node+"/"+ns+"/"+sa], nil
}

func TestSigner(t *testing.T) {
	now := time.Now()
	st, _, _ := Step(State{}, td, policy, now, false)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), TrustDomain: td, TTL: time.Hour,
		State:     func() State { return st },
		Agents:    fakeAgents{"agent-a": "node-a"},
		Placement: fakePlacement{"node-a/demo/frontend": true, "node-b/demo/backend": true},
		Metrics:   m,
	}
	frontend := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/frontend")
	backend := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/backend")
	for _, tc := range []struct {
		name  string
		token string
		id    spiffeid.ID
		want  int
	}{
		{"anonymous", "", frontend, http.StatusUnauthorized},
		{"not an agent", "pod-token", frontend, http.StatusUnauthorized},
		{"sa on another node", "agent-a", backend, http.StatusForbidden},
		{"other trust domain", "agent-a", spiffeid.RequireFromString("spiffe://evil/ns/demo/sa/frontend"), http.StatusForbidden},
		{"the CA's own id", "agent-a", spiffeid.RequireFromString("spiffe://cluster.local/membrane/ca"), http.StatusForbidden},
		{"sa on the agent's node", "agent-a", frontend, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, csr, err := NewCSR(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(SignRequest{CSR: csr})
			r := httptest.NewRequest(http.MethodPost, SignPath, bytes.NewReader(body))
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", w.Code, strings.TrimSpace(w.Body.String()), tc.want)
			}
			if w.Code != http.StatusOK {
				return
			}
			var resp SignResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			chain, bundle, err := ParseSignResponse(td, resp)
			if err != nil {
				t.Fatal(err)
			}
			svid, err := NewSVID(chain, key)
			if err != nil {
				t.Fatal(err)
			}
			if svid.ID != tc.id {
				t.Fatalf("svid id %s, want %s", svid.ID, tc.id)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
				t.Fatalf("svid does not verify with the bundle: %v", err)
			}
			if ttl := svid.Certificates[0].NotAfter.Sub(now); ttl > time.Hour+time.Second || ttl < 59*time.Minute {
				t.Fatalf("svid ttl %s, want 1h", ttl)
			}
		})
	}
	if got := testutil.ToFloat64(m.Issued); got != 1 {
		t.Errorf("issued = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Refused.WithLabelValues("not_on_node")); got != 1 {
		t.Errorf("refused not_on_node = %v, want 1", got)
	}
}

func TestSignCSRRequiresTheRequestedID(t *testing.T) {
	st, _, _ := Step(State{}, td, policy, time.Now(), false)
	_, csr, _ := NewCSR(spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"))
	_, err := st.Active.SignCSR(csr, spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/c"), time.Now(), time.Hour)
	if err == nil {
		t.Fatal("signed a CSR for another id")
	}
	if errors.Is(err, ErrUnauthenticated) {
		t.Fatal("wrong error")
	}
}

package spiffe

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// SignPath is the CA's signing endpoint: POST a SignRequest with the node
// agent's token as bearer; the answer is a SignResponse.
const SignPath = "/v1/svid"

// SignRequest asks for an X.509-SVID. The requested SPIFFE ID is the CSR's
// only URI SAN.
type SignRequest struct {
	// CSR is a DER PKCS#10 certificate signing request.
	CSR []byte `json:"csr"`
}

// SignResponse carries an issued SVID.
type SignResponse struct {
	// Chain is the SVID, leaf first, DER.
	Chain [][]byte `json:"chain"`
	// Bundle is the trust bundle at issue time, DER.
	Bundle [][]byte `json:"bundle"`
}

// ErrUnauthenticated is returned by a NodeAuthenticator for credentials that
// are not a node agent's.
var ErrUnauthenticated = errors.New("not an authenticated node agent")

// NodeAuthenticator tells which node's agent holds a token.
type NodeAuthenticator interface {
	// AgentNode returns the node of the agent token belongs to;
	// ErrUnauthenticated (wrapped) when it is no agent's.
	AgentNode(ctx context.Context, token string) (string, error)
}

// Placement tells where service accounts have pods.
type Placement interface {
	// HasPod reports whether a pod of serviceAccount in namespace is bound
	// to node, has not terminated and is not on the host's network (such
	// pods have no identity of their own).
	HasPod(ctx context.Context, node, namespace, serviceAccount string) (bool, error)
}

// Metrics count the CA's work.
type Metrics struct {
	Issued    prometheus.Counter
	Refused   *prometheus.CounterVec // by reason
	Rotations prometheus.Counter
}

// NewMetrics registers the CA's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Issued:    prometheus.NewCounter(prometheus.CounterOpts{Name: "membrane_spiffe_ca_svids_issued_total", Help: "X.509-SVIDs the built-in CA issued to node agents."}),
		Refused:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "membrane_spiffe_ca_requests_refused_total", Help: "SVID requests the built-in CA refused, by reason."}, []string{"reason"}),
		Rotations: prometheus.NewCounter(prometheus.CounterOpts{Name: "membrane_spiffe_ca_rotations_total", Help: "CA rotations (a new CA started signing)."}),
	}
	for _, c := range []prometheus.Collector{m.Issued, m.Refused, m.Rotations} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register CA metrics: %w", err)
		}
	}
	return m, nil
}

// Signer is the CA's signing endpoint.
type Signer struct {
	Log         *slog.Logger
	TrustDomain spiffeid.TrustDomain
	// TTL is the lifetime of issued SVIDs.
	TTL time.Duration
	// State returns the CA's current state (nil Active: not ready).
	State     func() State
	Agents    NodeAuthenticator
	Placement Placement
	Metrics   *Metrics
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

const maxRequestBytes = 16 << 10

// ServeHTTP answers SignPath.
func (s *Signer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != SignPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	code, reason, err := s.serve(w, r)
	if err != nil {
		s.Metrics.Refused.WithLabelValues(reason).Inc()
		s.Log.Info("svid request refused", "reason", reason, "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), code)
	}
}

func (s *Signer) serve(w http.ResponseWriter, r *http.Request) (int, string, error) {
	ctx := r.Context()
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return http.StatusUnauthorized, "unauthenticated", errors.New("a node agent's bearer token is required")
	}
	node, err := s.Agents.AgentNode(ctx, token)
	if errors.Is(err, ErrUnauthenticated) {
		return http.StatusUnauthorized, "unauthenticated", err
	}
	if err != nil {
		return http.StatusServiceUnavailable, "error", fmt.Errorf("authenticate: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil || len(body) > maxRequestBytes {
		return http.StatusBadRequest, "bad_request", fmt.Errorf("request body: unreadable or larger than %d bytes", maxRequestBytes)
	}
	var req SignRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return http.StatusBadRequest, "bad_request", fmt.Errorf("request body: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return http.StatusBadRequest, "bad_request", fmt.Errorf("csr: %w", err)
	}
	if len(csr.URIs) != 1 {
		return http.StatusBadRequest, "bad_request", fmt.Errorf("csr: %d URI SANs: want exactly one SPIFFE ID", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return http.StatusBadRequest, "bad_request", fmt.Errorf("csr: URI SAN: %w", err)
	}
	ns, sa, err := ParseWorkloadID(s.TrustDomain, id)
	if err != nil {
		return http.StatusForbidden, "not_workload", err
	}
	has, err := s.Placement.HasPod(ctx, node, ns, sa)
	if err != nil {
		return http.StatusServiceUnavailable, "error", fmt.Errorf("pods of %s/%s on node %s: %w", ns, sa, node, err)
	}
	if !has {
		return http.StatusForbidden, "not_on_node", fmt.Errorf("%s: service account %s/%s has no pod on node %s (host-network pods have no identity)", id, ns, sa, node)
	}
	st := s.State()
	if st.Active == nil {
		return http.StatusServiceUnavailable, "not_ready", errors.New("the CA is not ready")
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	chain, err := st.Active.SignCSR(req.CSR, id, now, s.TTL)
	if err != nil {
		return http.StatusBadRequest, "bad_request", err
	}
	resp := SignResponse{}
	for _, c := range chain {
		resp.Chain = append(resp.Chain, c.Raw)
	}
	for _, c := range st.Bundle(s.TrustDomain).X509Authorities() {
		resp.Bundle = append(resp.Bundle, c.Raw)
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		s.Log.Warn("write svid response", "error", err)
		return 0, "", nil
	}
	s.Metrics.Issued.Inc()
	s.Log.Debug("svid issued", "id", id.String(), "node", node, "expires", chain[0].NotAfter)
	return 0, "", nil
}

// ParseSignResponse returns the SVID chain and the bundle of a response.
func ParseSignResponse(td spiffeid.TrustDomain, resp SignResponse) ([]*x509.Certificate, *x509bundle.Bundle, error) {
	if len(resp.Chain) == 0 || len(resp.Bundle) == 0 {
		return nil, nil, errors.New("svid response: empty chain or bundle")
	}
	var chain []*x509.Certificate
	for _, der := range resp.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("svid response: chain: %w", err)
		}
		chain = append(chain, c)
	}
	b := x509bundle.New(td)
	for _, der := range resp.Bundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("svid response: bundle: %w", err)
		}
		b.AddX509Authority(c)
	}
	return chain, b, nil
}

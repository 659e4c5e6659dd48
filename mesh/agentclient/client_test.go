package agentclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/membrane-mesh/membrane/mesh/agentauth"
	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
)

const node = "node-1"

// agentWorld is one agent (tunnel, agentauth against a fake cluster that
// knows token "jane-token" and lets jane and CN "admin" get, admin also
// create) behind a fake API server whose node proxy needs "jane-token" or
// any client certificate.
type agentWorld struct {
	api       *httptest.Server
	ca        *x509.Certificate
	caKey     *ecdsa.PrivateKey
	mu        sync.Mutex
	published string // the Node's annotation
	served    string // the agent's certificate fingerprint
}

func newAgentWorld(t *testing.T) *agentWorld {
	t.Helper()
	w := &agentWorld{}
	w.ca, w.caKey = newCA(t)
	cert, err := agenttunnel.SelfSigned(node, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w.served = agenttunnel.Fingerprint(cert.Certificate[0])
	w.published = w.served

	cluster := fake.NewClientset()
	cluster.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if tr.Spec.Token == "jane-token" {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "jane"}}
		}
		return true, tr, nil
	})
	cluster.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		v := sar.Spec.ResourceAttributes.Verb
		sar.Status.Allowed = (sar.Spec.User == "jane" && v == "get") || sar.Spec.User == "admin"
		return true, sar, nil
	})
	pool := x509.NewCertPool()
	pool.AddCert(w.ca)
	auth := agentauth.New(agentauth.Options{Node: node, ClientCA: pool, Client: cluster})
	tunnels := agenttunnel.NewListener(agenttunnel.ServerConfig(cert), 8)
	inner := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: auth.Handler(slog.New(slog.DiscardHandler), http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(rw).Encode(map[string]string{"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery})
	}))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = inner.Serve(tunnels)
	}()
	plain := http.NewServeMux()
	plain.Handle("GET "+agenttunnel.Path, tunnels)
	agent := httptest.NewServer(plain)
	agentURL, _ := url.Parse(agent.URL)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/nodes/{name}", func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: r.PathValue("name"), Annotations: map[string]string{agenttunnel.CertAnnotation: w.published}}}
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(n)
	})
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(agentURL)
		pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, "/api/v1/nodes/"+node+":9890/proxy")
		pr.Out.Header.Del("Authorization") // the API server does not pass credentials on
	}}
	mux.HandleFunc("/api/v1/nodes/{nameport}/proxy/", func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer jane-token" && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
			http.Error(rw, `nodes "node-1" is forbidden: cannot get resource "nodes/proxy"`, http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(rw, r)
	})
	w.api = httptest.NewUnstartedServer(mux)
	w.api.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	w.api.StartTLS()
	t.Cleanup(func() {
		w.api.Close()
		agent.Close()
		_ = inner.Close()
		_ = tunnels.Close()
		<-done
	})
	return w
}

func (w *agentWorld) config(t *testing.T) *rest.Config {
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.api.Certificate().Raw})
	return &rest.Config{Host: w.api.URL, TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
}

func (w *agentWorld) client(t *testing.T, cfg *rest.Config) *Client {
	t.Helper()
	c, err := New(cfg, 9890)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBearerToken(t *testing.T) {
	w := newAgentWorld(t)
	cfg := w.config(t)
	cfg.BearerToken = "jane-token"
	c := w.client(t, cfg)
	var got map[string]string
	if err := c.JSON(t.Context(), node, http.MethodGet, "/v1/endpoints", &got); err != nil {
		t.Fatal(err)
	}
	if got["method"] != "GET" || got["path"] != "/v1/endpoints" {
		t.Fatalf("agent saw %v", got)
	}
	body, err := c.Stream(t.Context(), node, "/v1/flows", url.Values{"follow": {"true"}, "pod": {"a/b"}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(body)
	_ = body.Close()
	if !strings.Contains(string(raw), `"query":"follow=true\u0026pod=a%2Fb"`) {
		t.Fatalf("stream: %s", raw)
	}
	// jane may read but not change.
	err = c.JSON(t.Context(), node, http.MethodPost, "/v1/encryption/rotate-key", &got)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || se.Node != node {
		t.Fatalf("POST as jane: got %v, want 403 from the agent", err)
	}
}

func TestClientCertificate(t *testing.T) {
	w := newAgentWorld(t)
	cfg := w.config(t)
	certPEM, keyPEM := issue(t, w.ca, w.caKey, "admin")
	cfg.CertData, cfg.KeyData = certPEM, keyPEM
	var got map[string]string
	if err := w.client(t, cfg).JSON(t.Context(), node, http.MethodPost, "/v1/encryption/rotate-key", &got); err != nil {
		t.Fatal(err)
	}
	if got["method"] != "POST" {
		t.Fatalf("agent saw %v", got)
	}
}

func TestRefusals(t *testing.T) {
	w := newAgentWorld(t)
	t.Run("API server refuses the user", func(t *testing.T) {
		cfg := w.config(t)
		cfg.BearerToken = "unknown"
		err := w.client(t, cfg).JSON(t.Context(), node, http.MethodGet, "/v1/status", new(any))
		var refused *agenttunnel.RefusedError
		if !errors.As(err, &refused) || refused.Status != http.StatusForbidden || !strings.Contains(err.Error(), "nodes/proxy") {
			t.Fatalf("got %v, want the API server's 403 with a hint", err)
		}
	})
	t.Run("another certificate than the published one", func(t *testing.T) {
		cfg := w.config(t)
		cfg.BearerToken = "jane-token"
		c := w.client(t, cfg)
		w.mu.Lock()
		w.published = strings.Repeat("0", 64)
		w.mu.Unlock()
		err := c.JSON(t.Context(), node, http.MethodGet, "/v1/status", new(any))
		if !errors.Is(err, agenttunnel.ErrCertMismatch) {
			t.Fatalf("got %v, want %v", err, agenttunnel.ErrCertMismatch)
		}
		// The agent restarted and published its new certificate: the
		// cached pin is read again.
		w.mu.Lock()
		w.published = w.served
		w.mu.Unlock()
		if err := c.JSON(t.Context(), node, http.MethodGet, "/v1/status", new(any)); err != nil {
			t.Fatal(err)
		}
	})
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

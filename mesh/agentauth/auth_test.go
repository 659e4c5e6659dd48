package agentauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const node = "node-1"

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) issuer {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return issuer{cert, key}
}

func (ca issuer) issue(t *testing.T, cn string, orgs []string, usage x509.ExtKeyUsage, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func (ca issuer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// cluster is a fake API server: tokens it knows, users allowed per verb,
// and how many reviews it answered.
type cluster struct {
	client        *fake.Clientset
	tokenReviews  atomic.Int32
	accessReviews atomic.Int32
	lastAccess    atomic.Pointer[authorizationv1.ResourceAttributes]
}

func newCluster(tokens map[string]authenticationv1.UserInfo, allowed map[string][]string) *cluster {
	c := &cluster{client: fake.NewClientset()}
	c.client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.tokenReviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if u, ok := tokens[tr.Spec.Token]; ok {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: u}
		}
		return true, tr, nil
	})
	c.client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.accessReviews.Add(1)
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		ra := sar.Spec.ResourceAttributes
		c.lastAccess.Store(ra)
		if ra != nil && ra.Resource == "nodes" && ra.Subresource == "proxy" && ra.Name == node && ra.Group == "" {
			for _, v := range allowed[sar.Spec.User] {
				if v == ra.Verb {
					sar.Status.Allowed = true
				}
			}
		}
		if !sar.Status.Allowed {
			sar.Status.Reason = "no RBAC rule"
		}
		return true, sar, nil
	})
	return c
}

func request(method string, certs []*x509.Certificate, token string) *http.Request {
	r := httptest.NewRequest(method, "https://agent/v1/flows", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: certs}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func TestHandler(t *testing.T) {
	ca, other := newCA(t, "cluster-ca"), newCA(t, "other-ca")
	future := time.Now().Add(time.Hour)
	admin := ca.issue(t, "membrane-admin", []string{"ops"}, x509.ExtKeyUsageClientAuth, future)
	reader := ca.issue(t, "reader", nil, x509.ExtKeyUsageClientAuth, future)
	forged := other.issue(t, "membrane-admin", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, future)
	serverOnly := ca.issue(t, "membrane-admin", nil, x509.ExtKeyUsageServerAuth, future)
	expired := ca.issue(t, "membrane-admin", nil, x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Minute))
	c := newCluster(map[string]authenticationv1.UserInfo{
		"pod-token":  {Username: "system:serviceaccount:apps:default", Groups: []string{"system:serviceaccounts"}},
		"user-token": {Username: "jane", UID: "u-1"},
	}, map[string][]string{
		"membrane-admin": {"get", "create"},
		"reader":         {"get"},
		"jane":           {"get"},
	})
	auth := New(Options{Node: node, ClientCA: ca.pool(), Client: c.client})
	h := auth.Handler(testLogger(t), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("api")) }))

	for _, tc := range []struct {
		name   string
		method string
		certs  []*x509.Certificate
		token  string
		want   int
	}{
		{"no credentials", "GET", nil, "", 401},
		{"certificate of another CA", "GET", []*x509.Certificate{forged}, "", 401},
		{"server-only certificate", "GET", []*x509.Certificate{serverOnly}, "", 401},
		{"expired certificate", "GET", []*x509.Certificate{expired}, "", 401},
		{"unknown token", "GET", nil, "forged", 401},
		{"pod's own token", "GET", nil, "pod-token", 403},
		{"pod's own token, POST", "POST", nil, "pod-token", 403},
		{"admin certificate, GET", "GET", []*x509.Certificate{admin}, "", 200},
		{"admin certificate, POST", "POST", []*x509.Certificate{admin}, "", 200},
		{"reader certificate, GET", "GET", []*x509.Certificate{reader}, "", 200},
		{"reader certificate, POST", "POST", []*x509.Certificate{reader}, "", 403},
		{"user token, GET", "GET", nil, "user-token", 200},
		{"user token, POST", "POST", nil, "user-token", 403},
		{"forged certificate and user token", "GET", []*x509.Certificate{forged}, "user-token", 200},
		{"unknown method", "OPTIONS", []*x509.Certificate{admin}, "", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, request(tc.method, tc.certs, tc.token))
			if rec.Code != tc.want {
				t.Fatalf("got %d %q, want %d", rec.Code, rec.Body.String(), tc.want)
			}
			if (rec.Body.String() == "api") != (tc.want == 200) {
				t.Fatalf("API ran: %t, answer %q", rec.Body.String() == "api", rec.Body.String())
			}
			if tc.want != 200 && rec.Header().Get("Connection") != "close" {
				t.Fatal("refused without closing the connection")
			}
			if tc.want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	ra := c.lastAccess.Load()
	if ra == nil || ra.Version != "v1" || ra.Resource != "nodes" || ra.Subresource != "proxy" || ra.Name != node {
		t.Fatalf("last access review asked %+v", ra)
	}
}

func TestCachedDecisions(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newCluster(map[string]authenticationv1.UserInfo{"user-token": {Username: "jane"}}, map[string][]string{"jane": {"get"}})
	auth := New(Options{Node: node, Client: c.client, Now: func() time.Time { return now }})
	h := auth.Handler(testLogger(t), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	do := func(method, token string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, request(method, nil, token))
		return rec.Code
	}
	for range 5 {
		if got := do("GET", "user-token"); got != 200 {
			t.Fatalf("GET: %d", got)
		}
		if got := do("POST", "user-token"); got != 403 {
			t.Fatalf("POST: %d", got)
		}
		if got := do("GET", "bad"); got != 401 {
			t.Fatalf("bad token: %d", got)
		}
	}
	if tr, ar := c.tokenReviews.Load(), c.accessReviews.Load(); tr != 2 || ar != 2 {
		t.Fatalf("%d token reviews and %d access reviews for 15 requests, want 2 and 2", tr, ar)
	}
	// A denial expires before an approval; both are asked again later.
	now = now.Add(deniedTTL)
	do("POST", "user-token")
	do("GET", "bad")
	if tr, ar := c.tokenReviews.Load(), c.accessReviews.Load(); tr != 3 || ar != 3 {
		t.Fatalf("after %s: %d token reviews and %d access reviews, want 3 and 3", deniedTTL, tr, ar)
	}
	now = now.Add(tokenTTL)
	do("GET", "user-token")
	if tr, ar := c.tokenReviews.Load(), c.accessReviews.Load(); tr != 4 || ar != 4 {
		t.Fatalf("after %s: %d token reviews and %d access reviews, want 4 and 4", tokenTTL, tr, ar)
	}
}

func TestCacheBound(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newTTLCache[int](3, func() time.Time { return now })
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		c.put(k, i, time.Minute)
		if c.len() > 3 {
			t.Fatalf("%d entries after %s", c.len(), k)
		}
	}
	if v, ok := c.get("e"); !ok || v != 4 {
		t.Fatalf("newest entry: %d %t", v, ok)
	}
	now = now.Add(time.Minute)
	if _, ok := c.get("e"); ok {
		t.Fatal("entry outlived its TTL")
	}
}

func TestAPIServerDown(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errFake
	})
	h := New(Options{Node: node, Client: c}).Handler(testLogger(t), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Fatal("API ran")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request("GET", nil, "some-token"))
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "fake") {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
}

func TestClientCA(t *testing.T) {
	ca := newCA(t, "cluster-ca")
	pemCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	user := ca.issue(t, "jane", nil, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	verify := func(t *testing.T, pool *x509.CertPool) {
		t.Helper()
		a := New(Options{Node: node, ClientCA: pool, Client: fake.NewClientset()})
		u, err := a.Authenticate(t.Context(), request("GET", []*x509.Certificate{user}, ""))
		if err != nil || u.Name != "jane" {
			t.Fatalf("got %+v, %v", u, err)
		}
	}
	t.Run("from the cluster", func(t *testing.T) {
		c := fake.NewClientset(&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: AuthenticationConfigMapNamespace, Name: AuthenticationConfigMap},
			Data:       map[string]string{ClientCAKey: pemCA},
		})
		pool, err := ClusterClientCA(t.Context(), c)
		if err != nil || pool == nil {
			t.Fatalf("got %v, %v", pool, err)
		}
		verify(t, pool)
	})
	t.Run("cluster without one", func(t *testing.T) {
		pool, err := ClusterClientCA(t.Context(), fake.NewClientset())
		if err != nil || pool != nil {
			t.Fatalf("got %v, %v", pool, err)
		}
	})
	t.Run("garbage in the configmap", func(t *testing.T) {
		c := fake.NewClientset(&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: AuthenticationConfigMapNamespace, Name: AuthenticationConfigMap},
			Data:       map[string]string{ClientCAKey: "not a certificate"},
		})
		if _, err := ClusterClientCA(t.Context(), c); err == nil || !strings.Contains(err.Error(), ClientCAKey) {
			t.Fatalf("got %v, want an error naming %s", err, ClientCAKey)
		}
	})
	t.Run("from a file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ca.crt")
		if err := os.WriteFile(path, []byte(pemCA), 0o600); err != nil {
			t.Fatal(err)
		}
		pool, err := LoadClientCA(path)
		if err != nil {
			t.Fatal(err)
		}
		verify(t, pool)
		if err := os.WriteFile(path, []byte("nope"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadClientCA(path); err == nil {
			t.Fatal("garbage accepted")
		}
	})
}

package e2e

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"
)

// checkTLSTerminate: a TLS listener in Terminate mode (namespace shop)
// serves its certificate to clients of the TLSRoute's hostname and
// forwards the plaintext inside to the route's backend, echo-basic behind
// Service flaky-failing, which answers the client's HTTP; a client asking
// for another name gets no certificate of it.
func checkTLSTerminate(t *testing.T, k *kube) {
	ca := newTestCA(t)
	leaf, certPEM, keyPEM := ca.issue(t, "term.example.com")
	k.must(tlsSecret("shop", "term-cert", certPEM, keyPEM)+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls-term, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: tls, protocol: TLS, port: 8443, hostname: "*.example.com", tls: {mode: Terminate, certificateRefs: [{name: term-cert}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: term, namespace: shop}
spec:
  parentRefs: [{name: tls-term}]
  hostnames: [term.example.com]
  rules:
  - backendRefs: [{name: flaky-failing, port: 8080}]
`, "apply", "-f", "-")
	gw := waitGateway(t, k, "shop", "tls-term")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	url := fmt.Sprintf("https://%s:8443/term", gw.Status.Addresses[0].Value)
	eventually(t, gatewayTimeout, "HTTPS to the TLS listener reaches echo-basic in plaintext", func() error {
		r, err := hostGet(url, getOptions{host: "term.example.com", roots: roots})
		if err != nil {
			return err
		}
		if r.Code != http.StatusOK || r.Echo.Path != "/term" {
			return fmt.Errorf("status %d body %q, want echo-basic's answer to /term", r.Code, r.Body)
		}
		if !bytes.Equal(r.Cert, leaf) {
			return fmt.Errorf("the gateway presented another certificate than the listener's")
		}
		return nil
	})
	if r, err := hostGet(url, getOptions{host: "other.example.com", roots: roots}); err == nil {
		t.Errorf("a client of other.example.com got through: %d", r.Code)
	}
	t.Logf("TLS Terminate: term.example.com got the listener's certificate and echo-basic's answer; other.example.com refused")
}

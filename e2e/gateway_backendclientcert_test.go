package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// checkBackendClientCert: a Gateway's backend client certificate
// (spec.tls.backend.clientCertificateRef), in namespace shop. An
// echo-basic backend on node 2 serves HTTPS (BackendTLSPolicy) and checks
// the client certificates it is given against its client CA. Three
// Gateways route to it: "client-cert" presents a certificate of that CA,
// which the backend answers with; "client-cert-other" one of another CA,
// which the backend refuses (503); "client-cert-missing" names a Secret
// that does not exist: its listener is ResolvedRefs=False
// (InvalidCertificateRef) and still served, and the backend sees no
// client certificate. The three Gateways' clusters of the one backend are
// three, as their certificates are.
func checkBackendClientCert(t *testing.T, k *kube, s *localcluster.State) {
	serverCA, clientCA, otherCA := newTestCA(t), newTestCA(t), newTestCA(t)
	_, srvCert, srvKey := serverCA.issue(t, "backend.shop.example.com")
	_, gwCert, gwKey := clientCA.issue(t, "gateway.shop.example.com")
	_, otherCert, otherKey := otherCA.issue(t, "other.shop.example.com")
	b64 := base64.StdEncoding.EncodeToString
	caJSON, err := json.Marshal(string(serverCA.PEM))
	if err != nil {
		t.Fatal(err)
	}
	gateway := func(name, secret string) string {
		return fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %[1]s, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners: [{name: http, protocol: HTTP, port: 80}]
  tls:
    backend:
      clientCertificateRef: {name: %[2]s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %[1]s, namespace: shop}
spec:
  parentRefs: [{name: %[1]s}]
  rules:
  - backendRefs: [{name: mtls-backend, port: 443}]
`, name, secret)
	}
	k.must(fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: mtls-backend, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s, ca.crt: %s}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: mtls-backend-ca, namespace: shop}
data: {ca.crt: %s}
`, b64(srvCert), b64(srvKey), b64(clientCA.PEM), caJSON)+
		backendTLSPolicy("shop", "mtls-backend", "mtls-backend-ca", "backend.shop.example.com")+
		tlsEchoPod("shop", "mtls-backend", s.Nodes[1].Name, "mtls-backend", true)+
		tlsSecret("shop", "gateway-client", gwCert, gwKey)+tlsSecret("shop", "other-client", otherCert, otherKey)+
		gateway("client-cert", "gateway-client")+gateway("client-cert-other", "other-client")+gateway("client-cert-missing", "no-such-secret"),
		"apply", "-f", "-")

	// peers GETs through a Gateway and returns the client certificates
	// the backend verified (PEM).
	peers := func(gw gwv1.Gateway) ([]string, int, error) {
		r, err := hostGet("http://"+gw.Status.Addresses[0].Value+"/client-cert", getOptions{})
		if err != nil || r.Code != http.StatusOK {
			return nil, r.Code, err
		}
		if r.Echo.Pod != "mtls-backend" || r.Echo.TLS == nil {
			return nil, r.Code, fmt.Errorf("answered by pod %q, TLS %v: not the HTTPS backend", r.Echo.Pod, r.Echo.TLS)
		}
		return r.Echo.TLS.PeerCertificates, r.Code, nil
	}
	good := waitGateway(t, k, "shop", "client-cert")
	eventually(t, gatewayTimeout, "the backend gets client-cert's certificate", func() error {
		got, code, err := peers(good)
		switch {
		case err != nil || code != http.StatusOK:
			return fmt.Errorf("status %d, %v", code, err)
		case len(got) != 1 || strings.TrimSpace(got[0]) != strings.TrimSpace(string(gwCert)):
			return fmt.Errorf("the backend verified %d client certificates, not the Gateway's: %q", len(got), got)
		}
		return nil
	})

	other := waitGateway(t, k, "shop", "client-cert-other")
	eventually(t, gatewayTimeout, "the backend refuses client-cert-other's certificate (503)", func() error {
		if got, code, err := peers(other); code != http.StatusServiceUnavailable {
			return fmt.Errorf("status %d (client certificates %q), %v", code, got, err)
		}
		return nil
	})

	missing := waitGateway(t, k, "shop", "client-cert-missing")
	l := missing.Status.Listeners[0]
	checkCondition(t, "Gateway shop/client-cert-missing listener http", l.Conditions, string(gwv1.ListenerConditionResolvedRefs),
		metav1.ConditionFalse, string(gwv1.ListenerReasonInvalidCertificateRef), missing.Generation)
	if c := meta.FindStatusCondition(l.Conditions, string(gwv1.ListenerConditionResolvedRefs)); c == nil || !strings.Contains(c.Message, "spec.tls.backend.clientCertificateRef") {
		t.Errorf("ResolvedRefs %+v does not name spec.tls.backend.clientCertificateRef", c)
	}
	checkCondition(t, "Gateway shop/client-cert-missing listener http", l.Conditions, string(gwv1.ListenerConditionProgrammed),
		metav1.ConditionTrue, string(gwv1.ListenerReasonProgrammed), missing.Generation)
	eventually(t, gatewayTimeout, "client-cert-missing serves the backend without a client certificate", func() error {
		got, code, err := peers(missing)
		switch {
		case err != nil || code != http.StatusOK:
			return fmt.Errorf("status %d, %v", code, err)
		case len(got) != 0:
			return fmt.Errorf("the backend verified client certificates %q", got)
		}
		return nil
	})
	t.Logf("client-cert: the backend verified the Gateway's certificate; client-cert-other: 503; client-cert-missing: ResolvedRefs=False, served without a client certificate")
}

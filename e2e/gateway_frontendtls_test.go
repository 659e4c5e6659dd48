package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// checkFrontendTLS: client certificate validation of a Gateway's HTTPS
// listeners (spec.tls.frontend), in namespace shop in front of the
// echo-basic Service flaky-failing. On 443 (the default, AllowValidOnly)
// only a client whose certificate chains to the ConfigMap's CA gets
// through, and the backend learns its subject from X-Forwarded-Client-Cert
// (the one the client sent is replaced); on 8443 (AllowInsecureFallback)
// every client gets through and no client certificate header reaches the
// backend; 9443's CA ConfigMap does not exist: the listener is not served
// and its ResolvedRefs says why. A new CA in the ConfigMap applies without
// a change to the Gateway.
func checkFrontendTLS(t *testing.T, k *kube) {
	serverCA, clientCA, otherCA := newTestCA(t), newTestCA(t), newTestCA(t)
	_, srvCert, srvKey := serverCA.issue(t, "mtls.example.com")
	client := func(ca testCA, name string) *tls.Certificate {
		_, c, key := ca.issue(t, name)
		pair, err := tls.X509KeyPair(c, key)
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	alice, mallory := client(clientCA, "alice.example.com"), client(otherCA, "mallory.example.com")
	caMap := func(ca testCA) string {
		js, err := json.Marshal(string(ca.PEM))
		if err != nil {
			t.Fatal(err)
		}
		return "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: client-ca, namespace: shop}\ndata: {ca.crt: " + string(js) + "}\n"
	}
	k.must(tlsSecret("shop", "mtls-cert", srvCert, srvKey)+caMap(clientCA)+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mtls, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: https, protocol: HTTPS, port: 443, hostname: mtls.example.com, tls: {certificateRefs: [{name: mtls-cert}]}}
  - {name: optional, protocol: HTTPS, port: 8443, hostname: mtls.example.com, tls: {certificateRefs: [{name: mtls-cert}]}}
  - {name: broken, protocol: HTTPS, port: 9443, hostname: mtls.example.com, tls: {certificateRefs: [{name: mtls-cert}]}}
  tls:
    frontend:
      default:
        validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: client-ca}]}
      perPort:
      - {port: 8443, tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{group: "", kind: ConfigMap, name: client-ca}]}}}
      - {port: 9443, tls: {validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: no-such-ca}]}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mtls, namespace: shop}
spec:
  parentRefs: [{name: mtls}]
  rules:
  - backendRefs: [{name: flaky-failing, port: 8080}]
`, "apply", "-f", "-")
	gw := waitGateway(t, k, "shop", "mtls")
	checkCondition(t, "Gateway shop/mtls", gw.Status.Conditions, string(gwv1.GatewayConditionInsecureFrontendValidationMode),
		metav1.ConditionTrue, string(gwv1.GatewayReasonConfigurationChanged), gw.Generation)
	for _, l := range gw.Status.Listeners {
		if l.Name == "broken" {
			checkCondition(t, "listener broken", l.Conditions, string(gwv1.ListenerConditionResolvedRefs), metav1.ConditionFalse, "InvalidCACertificateRef", gw.Generation)
			checkCondition(t, "listener broken", l.Conditions, string(gwv1.ListenerConditionProgrammed), metav1.ConditionFalse, string(gwv1.ListenerReasonInvalid), gw.Generation)
		}
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serverCA.PEM)
	forged := map[string]string{"X-Forwarded-Client-Cert": `By=spiffe://forged;Subject="CN=admin"`}
	get := func(port int, cert *tls.Certificate) (gotResponse, error) {
		return hostGet(fmt.Sprintf("https://%s:%d/frontend", gw.Status.Addresses[0].Value, port),
			getOptions{host: "mtls.example.com", roots: roots, cert: cert, headers: forged})
	}
	// passes checks that the client with cert got through port, and what
	// X-Forwarded-Client-Cert the backend saw.
	passes := func(port int, cert *tls.Certificate, wantXFCC string) error {
		r, err := get(port, cert)
		if err != nil {
			return err
		}
		if r.Code != 200 {
			return fmt.Errorf("status %d", r.Code)
		}
		xfcc := strings.Join(r.Echo.Headers["X-Forwarded-Client-Cert"], ",")
		if wantXFCC == "" && xfcc != "" || !strings.Contains(xfcc, wantXFCC) || strings.Contains(xfcc, "forged") {
			return fmt.Errorf("the backend saw X-Forwarded-Client-Cert %q, want %q", xfcc, wantXFCC)
		}
		return nil
	}
	// refused checks that the server refused the client with cert on port
	// for its certificate. It reads the server's verdict before writing
	// anything: in TLS 1.3 the client's handshake ends before the server
	// judges its certificate, and a request written meanwhile may meet the
	// closed connection (broken pipe, reset) instead of the alert.
	refused := func(port int, cert *tls.Certificate) error {
		conf := &tls.Config{ServerName: "mtls.example.com", RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		d := tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(gw.Status.Addresses[0].Value, strconv.Itoa(port)))
		if err == nil {
			defer c.Close()
			if err = c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
				return err
			}
			var b [1]byte
			switch _, err = c.Read(b[:]); {
			case err == nil:
				return fmt.Errorf("the server accepted the connection and sent data")
			case errors.Is(err, os.ErrDeadlineExceeded):
				return fmt.Errorf("the server accepted the connection: no alert within 3s")
			}
		}
		if !strings.Contains(err.Error(), "certificate") {
			return fmt.Errorf("failed, but not for the certificate: %w", err)
		}
		return nil
	}
	eventually(t, gatewayTimeout, "a client with a certificate of the CA gets through 443", func() error {
		return passes(443, alice, `Subject="CN=alice.example.com"`)
	})
	if err := refused(443, nil); err != nil {
		t.Errorf("443 without a client certificate: %v", err)
	}
	if err := refused(443, mallory); err != nil {
		t.Errorf("443 with a certificate of another CA: %v", err)
	}
	for name, cert := range map[string]*tls.Certificate{"without a client certificate": nil, "with a certificate of another CA": mallory, "with a certificate of the CA": alice} {
		if err := passes(8443, cert, ""); err != nil {
			t.Errorf("8443 (AllowInsecureFallback) %s: %v", name, err)
		}
	}
	if r, err := get(9443, alice); err == nil {
		t.Errorf("9443, whose CA does not resolve, answered %d", r.Code)
	}
	t.Logf("443: CA's client 200, no certificate and another CA's refused; 8443: all three 200 without X-Forwarded-Client-Cert; 9443 not served")

	// A new CA in the ConfigMap: the other CA's client gets through, the
	// first one's no longer.
	k.must(caMap(otherCA), "apply", "-f", "-")
	eventually(t, gatewayTimeout, "after the CA's rotation, the new CA's client gets through 443", func() error {
		return passes(443, mallory, `Subject="CN=mallory.example.com"`)
	})
	if err := refused(443, alice); err != nil {
		t.Errorf("443 after the CA's rotation, with the old CA's certificate: %v", err)
	}
}

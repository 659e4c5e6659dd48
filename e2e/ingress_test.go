package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestIngress installs Membrane with the Ingress controller on a cluster of
// its own and serves Ingresses of the class membrane from the node Envoys:
// a dedicated Ingress with a TLS host (its Secret made here), path rules to
// two Services and a default backend gets an address of its own; two
// shared Ingresses (one by Membrane's annotation, one by Cilium's) share
// one; the test process, on the host, gets the right backend for each
// host and path, over HTTPS the Secret's certificate; an Ingress with a
// missing Service gets a Warning Event and the others keep working.
func TestIngress(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-ing-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.248.0.0/16", ServiceCIDR: "10.94.0.0/16",
		HelmSet: []string{"gatewayAPI.enabled=true", "ingressController.enabled=true"},
	})
	l := s.Layout()
	k := &kube{t: t, kubeconfig: l.Kubeconfig(), kubectlPath: shared.toolsDir + "/bin/kubectl"}

	certPEM, keyPEM := selfSigned(t, "shop.example.com")
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
	for i, v := range []string{"v1", "v2"} {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: shop-%[1]s, namespace: shop}
spec:
  selector: {app: shop, version: %[1]s}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Pod
metadata: {name: shop-%[1]s, namespace: shop, labels: {app: shop, version: %[1]s}}
spec:
  nodeName: %[2]s
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
`, v, s.Nodes[i].Name)
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Secret
metadata: {name: shop-tls, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  ingressClassName: membrane
  defaultBackend: {service: {name: shop-v2, port: {number: 8080}}}
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /v1, pathType: Prefix, backend: {service: {name: shop-v1, port: {name: http}}}}
      - {path: /exact, pathType: Exact, backend: {service: {name: shop-v1, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: blog
  namespace: shop
  annotations: {ingress.membrane.io/loadbalancer-mode: shared}
spec:
  ingressClassName: membrane
  rules:
  - host: blog.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: shop-v1, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: docs
  namespace: shop
  annotations: {ingress.cilium.io/loadbalancer-mode: shared}
spec:
  ingressClassName: membrane
  rules:
  - host: docs.example.com
    http:
      paths:
      - {path: /docs, pathType: ImplementationSpecific, backend: {service: {name: shop-v2, port: {number: 8080}}}}
`, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))
	k.must(b.String(), "apply", "-f", "-")
	k.must("", "-n", "shop", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")

	// Every Ingress gets an address of the pool: shop its own, blog and
	// docs one together.
	addrs := map[string]netip.Addr{}
	for _, name := range []string{"shop", "blog", "docs"} {
		eventually(t, gatewayTimeout, "Ingress "+name+" status.loadBalancer.ingress", func() error {
			var ing networkingv1.Ingress
			if err := getJSON(k, &ing, "-n", "shop", "get", "ingress", name); err != nil {
				return err
			}
			if len(ing.Status.LoadBalancer.Ingress) != 1 {
				return fmt.Errorf("status %+v", ing.Status)
			}
			a, err := netip.ParseAddr(ing.Status.LoadBalancer.Ingress[0].IP)
			addrs[name] = a
			return err
		})
		if pool := l.AddressPool(); !inRange(addrs[name], pool) {
			t.Errorf("Ingress %s address %s is not in the pool %s", name, addrs[name], pool)
		}
	}
	t.Logf("addresses: %v", addrs)
	if addrs["shop"] == addrs["blog"] || addrs["blog"] != addrs["docs"] {
		t.Fatalf("addresses %v: want shop (dedicated) apart, blog and docs (shared) on one", addrs)
	}

	shop := "http://" + addrs["shop"].String()
	eventually(t, gatewayTimeout, "GET shop.example.com/v1", func() error {
		e, code, err := ingressGet(shop+"/v1/items", "shop.example.com", nil)
		if err == nil && (code != http.StatusOK || e.Pod != "shop-v1") {
			err = fmt.Errorf("status %d from %q", code, e.Pod)
		}
		return err
	})
	for _, c := range []struct{ base, host, path, pod string }{
		{shop, "shop.example.com", "/v1", "shop-v1"},
		{shop, "shop.example.com", "/v1/items", "shop-v1"},
		{shop, "shop.example.com", "/v1x", "shop-v2"}, // Prefix is element-wise: the default backend
		{shop, "shop.example.com", "/exact", "shop-v1"},
		{shop, "shop.example.com", "/exact/more", "shop-v2"},
		{shop, "other.example.com", "/v1", "shop-v2"}, // no rule for the host: the default backend
		{"http://" + addrs["blog"].String(), "blog.example.com", "/", "shop-v1"},
		{"http://" + addrs["docs"].String(), "docs.example.com", "/docs/a", "shop-v2"},
	} {
		for range 3 {
			e, code, err := ingressGet(c.base+c.path, c.host, nil)
			if err != nil || code != http.StatusOK || e.Pod != c.pod || e.Path != c.path {
				t.Errorf("GET %s%s (Host %s): %d from %q path %q, %v; want 200 from %s", c.base, c.path, c.host, code, e.Pod, e.Path, err, c.pod)
			}
		}
	}
	e, code, err := ingressGet("http://"+addrs["docs"].String()+"/docsx", "docs.example.com", nil)
	if err != nil || code != http.StatusNotFound {
		t.Errorf("GET docs.example.com/docsx: %d from %q, %v; want 404 (no default backend)", code, e.Pod, err)
	}

	// HTTPS: the Secret's certificate, the same routes.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	block, _ := pem.Decode(certPEM)
	var presented []byte
	tlsConf := &tls.Config{ServerName: "shop.example.com", RootCAs: roots, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				presented = cs.PeerCertificates[0].Raw
			}
			return nil
		}}
	https := "https://" + addrs["shop"].String()
	eventually(t, gatewayTimeout, "GET https shop.example.com/v1", func() error {
		e, code, err := ingressGet(https+"/v1/a", "shop.example.com", tlsConf)
		if err == nil && (code != http.StatusOK || e.Pod != "shop-v1") {
			err = fmt.Errorf("status %d from %q", code, e.Pod)
		}
		return err
	})
	if !bytes.Equal(presented, block.Bytes) {
		t.Errorf("the certificate presented is not the Secret's")
	}
	if e, code, err := ingressGet(https+"/elsewhere", "shop.example.com", tlsConf); err != nil || code != http.StatusOK || e.Pod != "shop-v2" {
		t.Errorf("GET https /elsewhere: %d from %q, %v; want the default backend shop-v2", code, e.Pod, err)
	}

	// A missing Service: a Warning Event on its Ingress, which still gets
	// its address; the others keep serving.
	k.must(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: shop, annotations: {ingress.membrane.io/loadbalancer-mode: shared}}
spec:
  ingressClassName: membrane
  rules:
  - host: broken.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nowhere, port: {number: 8080}}}}
`, "apply", "-f", "-")
	eventually(t, gatewayTimeout, "Event on Ingress broken", func() error {
		out, err := k.run(t.Context(), "", "-n", "shop", "get", "events", "--field-selector", "involvedObject.kind=Ingress,involvedObject.name=broken", "-o", "json")
		if err != nil {
			return err
		}
		var list struct {
			Items []struct {
				Type, Reason, Message string
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Type == "Warning" && strings.Contains(ev.Message, "Service shop/nowhere not found") {
				t.Logf("event: %s %s", ev.Reason, ev.Message)
				return nil
			}
		}
		return fmt.Errorf("events %+v", list.Items)
	})
	eventually(t, gatewayTimeout, "GET broken.example.com -> 500", func() error {
		if _, code, err := ingressGet("http://"+addrs["blog"].String()+"/", "broken.example.com", nil); err != nil || code != http.StatusInternalServerError {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	for range 5 {
		if e, code, err := ingressGet("http://"+addrs["blog"].String()+"/", "blog.example.com", nil); err != nil || code != http.StatusOK || e.Pod != "shop-v1" {
			t.Errorf("GET blog.example.com after the broken Ingress: %d from %q, %v", code, e.Pod, err)
		}
	}
}

// ingressGet makes one GET (3 s bound) with the Host header (and SNI) host,
// over TLS with tlsConf when it is set, and decodes echo-basic's answer
// when the status is 200.
func ingressGet(url, host string, tlsConf *tls.Config) (echoResponse, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return echoResponse{}, 0, err
	}
	req.Host = host
	// No proxy from the environment: the address is on the local underlay.
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: tlsConf,
		DialContext: (&net.Dialer{Timeout: 3 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return echoResponse{}, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return echoResponse{}, resp.StatusCode, err
	}
	var e echoResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &e); err != nil {
			return e, resp.StatusCode, fmt.Errorf("decode %q: %w", body, err)
		}
	}
	return e, resp.StatusCode, nil
}

// selfSigned makes a self-signed ECDSA certificate for host and its key,
// PEM.
func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host},
		DNSNames: []string{host}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

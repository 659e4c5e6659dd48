package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestIngress installs Membrane with the Ingress controller on a cluster of
// its own and serves Ingresses of the class membrane from the node Envoys:
// a dedicated Ingress with a TLS host (its Secret made here), path rules to
// two Services and a default backend gets an address of its own; two
// shared Ingresses (one by Membrane's annotation, one by Cilium's) share
// one; the test process, on the host, gets the right backend for each
// host and path, over HTTPS the Secret's certificate; an Ingress forcing
// HTTPS redirects port 80 (301, the path and query kept) and its request
// timeout answers a slow backend with 504; a TLS passthrough Ingress
// forwards HTTPS connections whole to a backend that presents its own
// certificate; an Ingress with a missing
// Service and an annotation that does not parse gets a Warning Event for
// each and the others keep working.
func TestIngress(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s, k := gatewayCluster(t, "e2e-ing-", "10.248.0.0/16", "10.94.0.0/16", true)
	l := s.Layout()

	ca := newTestCA(t)
	leaf, certPEM, keyPEM := ca.issue(t, "shop.example.com")
	var b strings.Builder
	b.WriteString(shopBackends("shop", s.Nodes))
	b.WriteString(tlsSecret("shop", "shop-tls", certPEM, keyPEM))
	b.WriteString(`---
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
`)
	k.must(b.String(), "apply", "-f", "-")
	k.must("", "-n", "shop", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")

	// Every Ingress gets an address of the pool: shop its own, blog and
	// docs one together.
	addrs := map[string]netip.Addr{}
	for _, name := range []string{"shop", "blog", "docs"} {
		addrs[name] = waitIngressAddress(t, k, "shop", name)
		if pool := l.AddressPool(); !inRange(addrs[name], pool) {
			t.Errorf("Ingress %s address %s is not in the pool %s", name, addrs[name], pool)
		}
	}
	t.Logf("addresses: %v", addrs)
	if addrs["shop"] == addrs["blog"] || addrs["blog"] != addrs["docs"] {
		t.Fatalf("addresses %v: want shop (dedicated) apart, blog and docs (shared) on one", addrs)
	}

	shop := "http://" + addrs["shop"].String()
	// Each address serves once its node Envoys have its listener.
	for _, c := range []struct{ base, host, path, pod string }{
		{shop, "shop.example.com", "/v1/items", "shop-v1"},
		{"http://" + addrs["blog"].String(), "blog.example.com", "/", "shop-v1"},
	} {
		eventually(t, gatewayTimeout, "GET "+c.host+c.path, func() error {
			e, code, err := ingressGet(c.base+c.path, c.host)
			if err == nil && (code != http.StatusOK || e.Pod != c.pod) {
				err = fmt.Errorf("status %d from %q", code, e.Pod)
			}
			return err
		})
	}
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
			e, code, err := ingressGet(c.base+c.path, c.host)
			if err != nil || code != http.StatusOK || e.Pod != c.pod || e.Path != c.path {
				t.Errorf("GET %s%s (Host %s): %d from %q path %q, %v; want 200 from %s", c.base, c.path, c.host, code, e.Pod, e.Path, err, c.pod)
			}
		}
	}
	e, code, err := ingressGet("http://"+addrs["docs"].String()+"/docsx", "docs.example.com")
	if err != nil || code != http.StatusNotFound {
		t.Errorf("GET docs.example.com/docsx: %d from %q, %v; want 404 (no default backend)", code, e.Pod, err)
	}

	// HTTPS: the Secret's certificate, the same routes.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	https := "https://" + addrs["shop"].String()
	var r gotResponse
	eventually(t, gatewayTimeout, "GET https shop.example.com/v1", func() error {
		var err error
		r, err = hostGet(https+"/v1/a", getOptions{host: "shop.example.com", roots: roots})
		if err == nil && (r.Code != http.StatusOK || r.Echo.Pod != "shop-v1") {
			err = fmt.Errorf("status %d from %q", r.Code, r.Echo.Pod)
		}
		return err
	})
	if !bytes.Equal(r.Cert, leaf) {
		t.Errorf("the certificate presented is not the Secret's")
	}
	if r, err := hostGet(https+"/elsewhere", getOptions{host: "shop.example.com", roots: roots}); err != nil || r.Code != http.StatusOK || r.Echo.Pod != "shop-v2" {
		t.Errorf("GET https /elsewhere: %d from %q, %v; want the default backend shop-v2", r.Code, r.Echo.Pod, err)
	}

	// Options by annotation: HTTPS forced for the TLS host (port 80
	// redirects every path) and a request timeout (echo-basic answers
	// ?delay=D after D).
	_, secureCert, secureKey := ca.issue(t, "secure.example.com")
	k.must(tlsSecret("shop", "secure-tls", secureCert, secureKey)+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: shop
  annotations: {ingress.membrane.io/force-https: "true", ingress.cilium.io/request-timeout: 1s}
spec:
  ingressClassName: membrane
  tls: [{hosts: [secure.example.com], secretName: secure-tls}]
  rules:
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: shop-v1, port: {number: 8080}}}}
`, "apply", "-f", "-")
	secure := waitIngressAddress(t, k, "shop", "secure")
	eventually(t, gatewayTimeout, "GET http secure.example.com/a -> 301 to https", func() error {
		r, err := hostGet("http://"+secure.String()+"/a/b?c=d", getOptions{host: "secure.example.com"})
		if err == nil && (r.Code != http.StatusMovedPermanently || r.Header.Get("Location") != "https://secure.example.com/a/b?c=d") {
			err = fmt.Errorf("status %d, Location %q", r.Code, r.Header.Get("Location"))
		}
		return err
	})
	secureGet := func(path string) (gotResponse, time.Duration, error) {
		start := time.Now()
		r, err := hostGet("https://"+secure.String()+path, getOptions{host: "secure.example.com", roots: roots})
		return r, time.Since(start), err
	}
	// Port 443 may come a moment after port 80: its listener waits for
	// the certificate.
	eventually(t, gatewayTimeout, "GET https secure.example.com/a?delay=200ms -> 200 from shop-v1", func() error {
		r, _, err := secureGet("/a?delay=200ms")
		if err == nil && (r.Code != http.StatusOK || r.Echo.Pod != "shop-v1") {
			err = fmt.Errorf("%d from %q", r.Code, r.Echo.Pod)
		}
		return err
	})
	if r, took, err := secureGet("/a?delay=2500ms"); err != nil || r.Code != http.StatusGatewayTimeout || took > 2*time.Second {
		t.Errorf("GET https secure.example.com/a?delay=2500ms: %d after %s, %v; want 504 after the 1 s request timeout", r.Code, took, err)
	}

	// TLS passthrough: port 443 forwards the connections for
	// pass.example.com whole to an echo pod that terminates TLS with its
	// own certificate.
	passLeaf, passCert, passKey := ca.issue(t, "pass.example.com")
	k.must(tlsSecret("shop", "pass-tls", passCert, passKey)+tlsEchoPod("shop", "pass-tls", s.Nodes[1].Name, "pass-tls")+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: pass
  namespace: shop
  annotations: {ingress.membrane.io/tls-passthrough: "true"}
spec:
  ingressClassName: membrane
  rules:
  - host: pass.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: pass-tls, port: {name: https}}}}
`, "apply", "-f", "-")
	pass := waitIngressAddress(t, k, "shop", "pass")
	eventually(t, gatewayTimeout, "GET https pass.example.com through TLS passthrough", func() error {
		r, err := hostGet("https://"+pass.String()+"/p", getOptions{host: "pass.example.com", roots: roots})
		switch {
		case err != nil:
			return err
		case r.Code != http.StatusOK || r.Echo.Pod != "pass-tls":
			return fmt.Errorf("status %d from %q", r.Code, r.Echo.Pod)
		case !bytes.Equal(r.Cert, passLeaf):
			return errors.New("the certificate presented is not the backend's")
		}
		return nil
	})

	// A missing Service and an annotation that does not parse: a Warning
	// Event each on their Ingress, which still gets its address; the
	// others keep serving.
	k.must(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: shop, annotations: {ingress.membrane.io/loadbalancer-mode: shared, ingress.cilium.io/force-https: maybe}}
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
		var found []string
		for _, ev := range list.Items {
			for _, want := range []string{"Service shop/nowhere not found", `annotation ingress.cilium.io/force-https: "maybe" is not true or false`} {
				if ev.Type == "Warning" && strings.Contains(ev.Message, want) {
					found = append(found, ev.Reason+" "+ev.Message)
				}
			}
		}
		if len(found) != 2 {
			return fmt.Errorf("events %+v", list.Items)
		}
		t.Logf("events: %q", found)
		return nil
	})
	eventually(t, gatewayTimeout, "GET broken.example.com -> 500", func() error {
		if _, code, err := ingressGet("http://"+addrs["blog"].String()+"/", "broken.example.com"); err != nil || code != http.StatusInternalServerError {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	for range 5 {
		if e, code, err := ingressGet("http://"+addrs["blog"].String()+"/", "blog.example.com"); err != nil || code != http.StatusOK || e.Pod != "shop-v1" {
			t.Errorf("GET blog.example.com after the broken Ingress: %d from %q, %v", code, e.Pod, err)
		}
	}
}

// ingressGet makes one plain HTTP GET with the Host header host (see
// hostGet).
func ingressGet(url, host string) (echoResponse, int, error) {
	r, err := hostGet(url, getOptions{host: host})
	return r.Echo, r.Code, err
}

package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestGatewayExperimental: fields of the experimental Gateway API CRDs, on
// a cluster of its own. HTTPRoute retries: Service flaky has two
// endpoints, an echo server whose /status/503 answers 503 and an http-echo
// that answers 200 to every path; without retry about half the requests
// get 503, with retry on 503 every request gets 200 (the retry goes to the
// endpoint not tried yet), and the node Envoys count the retries. Rules
// with sessionPersistence keep a client with the cookie on one endpoint.
// A Gateway's infrastructure labels are ignored, and its Accepted
// condition says so. Then the ExternalAuth filter (checkExtAuth), TCPRoutes
// and UDPRoutes (checkL4Routes), client certificate validation
// (checkFrontendTLS), TLS listeners terminating TLS (checkTLSTerminate),
// the Gateway's backend client certificate (checkBackendClientCert).
func TestGatewayExperimental(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-gr-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.237.0.0/16", ServiceCIDR: "10.87.0.0/16",
		HelmSet: []string{"gatewayAPI.enabled=true", "gatewayAPI.crds=experimental"},
	})
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	k.must(`apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: failing, namespace: shop, labels: {app: flaky, which: failing}}
spec:
  nodeName: `+s.Nodes[0].Name+`
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
---
apiVersion: v1
kind: Pod
metadata: {name: healthy, namespace: shop, labels: {app: flaky, which: healthy}}
spec:
  nodeName: `+s.Nodes[1].Name+`
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: hashicorp/http-echo:1.0.0
    args: ["-text=ok", "-listen=:5678"]
    ports: [{name: http, containerPort: 5678}]
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: shop}
spec:
  selector: {app: flaky}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: flaky-failing, namespace: shop}
spec:
  selector: {which: failing}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: flaky-healthy, namespace: shop}
spec:
  selector: {which: healthy}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [retry.example.com]
  rules:
  - retry: {codes: [503], attempts: 2, backoff: 10ms}
    backendRefs: [{name: flaky, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [plain.example.com]
  rules:
  - backendRefs: [{name: flaky, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sticky, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [sticky.example.com]
  rules:
  - sessionPersistence: {sessionName: shop, type: Cookie}
    backendRefs: [{name: flaky, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sticky-split, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [sticky-split.example.com]
  rules:
  - sessionPersistence: {type: Cookie}
    backendRefs: [{name: flaky-failing, port: 8080}, {name: flaky-healthy, port: 8080}]
`, "apply", "-f", "-")
	k.must("", "-n", "shop", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")
	gw := waitGateway(t, k, "shop", "web")
	base := "http://" + netip.MustParseAddr(gw.Status.Addresses[0].Value).String()

	// counts GETs /status/503 n times with Host host, by status.
	counts := func(host string, n int) map[int]int {
		out := map[int]int{}
		for range n {
			code, err := statusOf(base+"/status/503", host, 3*time.Second)
			if err != nil {
				t.Fatalf("GET %s/status/503: %v", host, err)
			}
			out[code]++
		}
		return out
	}
	eventually(t, gatewayTimeout, "both endpoints answer through the route without retry", func() error {
		if got := counts("plain.example.com", 10); got[http.StatusOK] == 0 || got[http.StatusServiceUnavailable] == 0 {
			return fmt.Errorf("statuses %v, want 200s and 503s", got)
		}
		return nil
	})
	const retryStat = "cluster.gateway/shop/flaky/8080.upstream_rq_retry"
	// Each node's Envoy gets the gateway's configuration on its own: the
	// count starts once every one has the cluster.
	eventually(t, gatewayTimeout, "every node Envoy has the route's cluster", func() error {
		for _, node := range s.Nodes {
			if _, ok := envoyStatIf(t, s.Layout().NodeNetns(node.Name), retryStat); !ok {
				return fmt.Errorf("the Envoy of %s has no %s", node.Name, retryStat)
			}
		}
		return nil
	})
	retries := func() int {
		n := 0
		for _, node := range s.Nodes {
			n += envoyStat(t, s.Layout().NodeNetns(node.Name), retryStat)
		}
		return n
	}
	before := retries()
	plain, retried := counts("plain.example.com", 40), counts("retry.example.com", 40)
	after := retries()
	t.Logf("40 GETs /status/503 each: without retry %v, with retry on 503 %v; node Envoys' retries %d -> %d", plain, retried, before, after)
	if plain[http.StatusServiceUnavailable] == 0 {
		t.Errorf("without retry no request got 503 (%v): the failing endpoint took none", plain)
	}
	if retried[http.StatusOK] != 40 {
		t.Errorf("with retry on 503: %v, want 40 × 200", retried)
	}
	if after-before < plain[http.StatusServiceUnavailable]/2 {
		t.Errorf("the node Envoys retried %d times over 40 requests", after-before)
	}

	// Session persistence: without a cookie both endpoints answer; with
	// the cookie of an answer, every request goes to the endpoint that
	// gave it, for a Service's two endpoints (sticky) as for two
	// backendRefs (sticky-split).
	for _, host := range []string{"sticky.example.com", "sticky-split.example.com"} {
		cookies := map[string]string{} // by endpoint
		eventually(t, gatewayTimeout, host+": both endpoints answer, each setting a cookie", func() error {
			clear(cookies)
			for range 20 {
				who, cookie, err := stickyGet(base, host, "")
				if err != nil {
					return err
				}
				if cookie == "" {
					return fmt.Errorf("%s answered without a session cookie", who)
				}
				cookies[who] = cookie
			}
			if len(cookies) != 2 {
				return fmt.Errorf("only %v answered 20 requests", slices.Collect(maps.Keys(cookies)))
			}
			return nil
		})
		for who, cookie := range cookies {
			for range 10 {
				got, _, err := stickyGet(base, host, cookie)
				if err != nil || got != who {
					t.Fatalf("%s with %s's cookie %q: answered by %s (%v)", host, who, cookie, got, err)
				}
			}
		}
		t.Logf("%s: 10 requests with each endpoint's cookie all went to it (%v)", host, cookies)
	}

	k.must("", "-n", "shop", "patch", "gateway", "web", "--type=merge", "-p", `{"spec":{"infrastructure":{"labels":{"team":"shop"}}}}`)
	accepted := func(name string) (gwv1.Gateway, *metav1.Condition, error) {
		var g gwv1.Gateway
		if err := getJSON(k, &g, "-n", "shop", "get", "gateway", name); err != nil {
			return g, nil, err
		}
		c := meta.FindStatusCondition(g.Status.Conditions, "Accepted")
		if c == nil || c.ObservedGeneration != g.Generation {
			return g, nil, fmt.Errorf("Accepted %+v at generation %d", c, g.Generation)
		}
		return g, c, nil
	}
	eventually(t, gatewayTimeout, "Gateway web accepted, naming what it ignores", func() error {
		_, c, err := accepted("web")
		if err == nil && (c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "not supported, ignored: spec.infrastructure")) {
			err = fmt.Errorf("Accepted %+v", c)
		}
		return err
	})
	if code, err := statusOf(base+"/status/200", "plain.example.com", 3*time.Second); err != nil || code != http.StatusOK {
		t.Errorf("Gateway web after its infrastructure labels: %d, %v; want 200", code, err)
	}

	t.Run("ExternalAuth", func(t *testing.T) { checkExtAuth(t, k, s, base) })
	t.Run("TCPRoute and UDPRoute", func(t *testing.T) { checkL4Routes(t, k, s) })
	t.Run("client certificate validation", func(t *testing.T) { checkFrontendTLS(t, k) })
	t.Run("TLSRoute with TLS terminated", func(t *testing.T) { checkTLSTerminate(t, k) })
	t.Run("backend client certificate", func(t *testing.T) { checkBackendClientCert(t, k, s) })
}

// stickyGet GETs base/ with Host host and, unless "", the Cookie cookie,
// and returns which of the flaky endpoints answered ("echo" or "ok") and
// the session cookie the answer sets ("name=value"; "" for none).
func stickyGet(base, host, cookie string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
	if err != nil {
		return "", "", err
	}
	req.Host = host
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	who := "ok"
	if strings.Contains(string(body), `"pod"`) {
		who = "echo"
	}
	set, _, _ := strings.Cut(resp.Header.Get("Set-Cookie"), ";")
	return who, set, nil
}

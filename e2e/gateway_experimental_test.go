package e2e

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
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
// endpoint not tried yet), and the node Envoys count the retries. A rule
// with sessionPersistence, which Membrane does not implement, answers 500
// and its route is Accepted=False naming the field. A Gateway asking for
// client certificate validation is refused (Accepted=False, no address); a
// Gateway's infrastructure labels are ignored, and its Accepted condition
// says so. Then TCPRoutes and UDPRoutes (checkL4Routes).
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
metadata: {name: failing, namespace: shop, labels: {app: flaky}}
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
metadata: {name: healthy, namespace: shop, labels: {app: flaky}}
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
	retries := func() int {
		n := 0
		for _, node := range s.Nodes {
			n += envoyStat(t, s.Layout().NodeNetns(node.Name), "cluster.gateway/shop/flaky/8080.upstream_rq_retry")
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

	var rt gwv1.HTTPRoute
	eventually(t, gatewayTimeout, "route sticky Accepted=False", func() error {
		rt = gwv1.HTTPRoute{}
		if err := getJSON(k, &rt, "-n", "shop", "get", "httproute", "sticky"); err != nil {
			return err
		}
		if len(rt.Status.Parents) != 1 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		if c := meta.FindStatusCondition(rt.Status.Parents[0].Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Accepted %+v", c)
		}
		return nil
	})
	c := meta.FindStatusCondition(rt.Status.Parents[0].Conditions, "Accepted")
	if c.Reason != "UnsupportedValue" || !strings.Contains(c.Message, "sessionPersistence") {
		t.Errorf("route sticky Accepted=False %s %q: want UnsupportedValue naming sessionPersistence", c.Reason, c.Message)
	}
	if code, err := statusOf(base+"/", "sticky.example.com", 3*time.Second); err != nil || code != http.StatusInternalServerError {
		t.Errorf("GET sticky.example.com: %d, %v; want 500", code, err)
	}

	k.must(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mtls, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners: [{name: http, protocol: HTTP, port: 8081}]
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{group: "", kind: ConfigMap, name: client-ca}]
`, "apply", "-f", "-")
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
	eventually(t, gatewayTimeout, "Gateway mtls refused", func() error {
		g, c, err := accepted("mtls")
		if err == nil && (c.Status != metav1.ConditionFalse || c.Reason != "Invalid" ||
			!strings.Contains(c.Message, "spec.tls.frontend.default.validation: client certificate validation is not supported") || len(g.Status.Addresses) > 0) {
			err = fmt.Errorf("Accepted %+v, addresses %v", c, g.Status.Addresses)
		}
		return err
	})
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

	t.Run("TCPRoute and UDPRoute", func(t *testing.T) { checkL4Routes(t, k, s) })
}

package e2e

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestGatewayPolicy checks that policy applies to a Gateway's traffic to
// its backends, which carries the reserved ingress identity: with a
// default-deny ingress policy on the backends (one on each node) requests
// from the host through the Gateway fail and `membrane observe` shows the
// drops from reserved:ingress; a policy allowing fromEntities [ingress]
// lets them through; an L7 rule on the backend port (GET /allowed) answers
// 403 to other paths through the Gateway. The Gateway's requests show in
// `membrane observe` as L7 flows from reserved:ingress.
func TestGatewayPolicy(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-gwpol-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.239.0.0/16", ServiceCIDR: "10.89.0.0/16",
		HelmSet: []string{"gatewayAPI.enabled=true"},
	})
	l := s.Layout()
	k := &kube{t: t, kubeconfig: l.Kubeconfig(), kubectlPath: shared.toolsDir + "/bin/kubectl"}

	var b strings.Builder
	b.WriteString(`apiVersion: v1
kind: Namespace
metadata: {name: store}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: store}
spec:
  selector: {app: store}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: store}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: http, protocol: HTTP, port: 80}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: store}
spec:
  parentRefs: [{name: web}]
  rules:
  - backendRefs: [{name: store, port: 8080}]
`)
	for i, n := range s.Nodes {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: store-%d, namespace: store, labels: {app: store}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
`, i, n.Name)
	}
	k.must(b.String(), "apply", "-f", "-")
	k.must("", "-n", "store", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")

	var gw gwv1.Gateway
	eventually(t, gatewayTimeout, "Gateway store/web Programmed with an address", func() error {
		gw = gwv1.Gateway{}
		if err := getJSON(k, &gw, "-n", "store", "get", "gateway", "web"); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") || len(gw.Status.Addresses) == 0 {
			return fmt.Errorf("status %+v", gw.Status)
		}
		return nil
	})
	base := "http://" + netip.MustParseAddr(gw.Status.Addresses[0].Value).String()

	// get makes n requests for path and counts the answers by status (0:
	// no answer) and the backends that answered 200.
	get := func(path string, n int) (map[int]int, map[string]bool) {
		codes, pods := map[int]int{}, map[string]bool{}
		for range n {
			e, code, err := echo(base+path, nil)
			if err != nil {
				code = 0
			}
			codes[code]++
			if code == http.StatusOK {
				pods[e.Pod] = true
			}
		}
		return codes, pods
	}
	// allOK waits until n requests in a row get 200 from both backends.
	allOK := func(what, path string) {
		t.Helper()
		eventually(t, gatewayTimeout, what, func() error {
			codes, pods := get(path, 10)
			if codes[http.StatusOK] != 10 || len(pods) != 2 {
				return fmt.Errorf("answers %v from %v, want 10 × 200 from both backends", codes, pods)
			}
			return nil
		})
	}
	allOK("GET /before through the Gateway, no policy", "/before")
	// Policy is checked when a connection opens: the Gateway closes its
	// idle connections to backends after 5 s (mesh/agent).
	idle := func() { time.Sleep(6 * time.Second) }

	t.Run("default deny drops the gateway's traffic", func(t *testing.T) {
		k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: store, namespace: store}
spec:
  endpointSelector: {matchLabels: {app: store}}
  ingress: [{}]
`, "apply", "-f", "-")
		idle()
		eventually(t, gatewayTimeout, "requests through the Gateway fail", func() error {
			codes, _ := get("/denied", 4)
			if codes[http.StatusOK] != 0 {
				return fmt.Errorf("answers %v, want none 200", codes)
			}
			return nil
		})
		line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--namespace", "store", "--from-identity", "ingress"},
			"(ingress)", "store/store-", ":3000", "Policy denied DROPPED")
		t.Logf("drop: %s", line)
	})

	t.Run("fromEntities ingress allows it", func(t *testing.T) {
		k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: store, namespace: store}
spec:
  endpointSelector: {matchLabels: {app: store}}
  ingress:
  - fromEntities: [ingress]
    toPorts: [{ports: [{port: "3000", protocol: TCP}]}]
`, "apply", "-f", "-")
		allOK("GET /open through the Gateway with fromEntities [ingress]", "/open")
		line := expectFlow(t, k, []string{"--protocol", "http", "--namespace", "store", "--http-path", "^/open$", "--from-identity", "ingress"},
			"(ingress)", "store/store-", "FORWARDED (HTTP/1.1 200 ", "/open")
		t.Logf("L7 flow: %s", line)
	})

	t.Run("L7 rules on the backend port apply", func(t *testing.T) {
		k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: store, namespace: store}
spec:
  endpointSelector: {matchLabels: {app: store}}
  ingress:
  - fromEntities: [ingress]
    toPorts:
    - ports: [{port: "3000", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/allowed"}]
`, "apply", "-f", "-")
		idle()
		defer func() {
			if t.Failed() {
				t.Logf("flows:\n%s", k.membrane("observe", "--last", "60", "--namespace", "store"))
			}
		}()
		eventually(t, gatewayTimeout, "GET /other through the Gateway gets 403", func() error {
			codes, _ := get("/other", 6)
			if codes[http.StatusForbidden] != 6 {
				return fmt.Errorf("answers %v, want 6 × 403", codes)
			}
			return nil
		})
		start := time.Now()
		allOK("GET /allowed through the Gateway with the L7 rule", "/allowed")
		t.Logf("GET /allowed 200 from both backends after %v", time.Since(start).Round(time.Millisecond))
		line := expectFlow(t, k, []string{"--protocol", "http", "--namespace", "store", "--http-status", "403", "--from-identity", "ingress"},
			"(ingress)", "store/store-", "L7 policy denied DROPPED (HTTP/1.1 403 ", "/other")
		t.Logf("L7 drop: %s", line)
	})

	t.Run("membrane status shows the Gateway", func(t *testing.T) {
		out := k.membrane("status")
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "store/web ") {
				line = l
			}
		}
		for _, want := range []string{"membrane", gw.Status.Addresses[0].Value, "True (Programmed)", "http HTTP/80 (1 routes)"} {
			if !strings.Contains(line, want) {
				t.Errorf("membrane status: Gateway line %q lacks %q in:\n%s", line, want, out)
			}
		}
	})
}

package e2e

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
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
	s, k := gatewayCluster(t, "e2e-gwpol-", "10.239.0.0/16", "10.89.0.0/16", false)

	var b strings.Builder
	b.WriteString(`apiVersion: v1
kind: Namespace
metadata: {name: store}
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
	b.WriteString(echoService("store", "store", "app: store"))
	for i, n := range s.Nodes {
		b.WriteString(echoPod("store", fmt.Sprintf("store-%d", i), n.Name, "app: store"))
	}
	k.must(b.String(), "apply", "-f", "-")
	k.must("", "-n", "store", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")

	gw := waitGateway(t, k, "store", "web")
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

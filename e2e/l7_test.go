package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// l7Pods are the checkout → payment scenario's pods: a payment server and
// a checkout client on each node, and a client of another app.
type l7Pods struct {
	payments  []corev1.Pod // by node: [0] on the first node
	checkouts []corev1.Pod
	other     corev1.Pod
}

// deployL7 starts the scenario in namespaces payments and checkout:
// payment-<node> (echo-basic on 3000, which logs every request it gets),
// checkout-<node> and other-<node> (curl), on the shared cluster.
func deployL7(t *testing.T, k *kube) l7Pods {
	t.Helper()
	return deployL7On(t, k, shared.cluster.Nodes)
}

// deployL7On is deployL7 on the cluster of k, whose nodes are nodes.
func deployL7On(t *testing.T, k *kube, nodes []localcluster.NodeState) l7Pods {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: payments}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: checkout}\n")
	b.WriteString(`---
apiVersion: v1
kind: Service
metadata: {name: payment, namespace: payments}
spec:
  selector: {app: payment}
  ports: [{name: http, port: 8080, targetPort: 3000}]
`)
	client := func(name, app, node string) string {
		return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: checkout, labels: {app: %s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: [sleep, "3600"]
`, name, app, node)
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: payment-%[1]s, namespace: payments, labels: {app: payment}}
spec:
  nodeName: %[1]s
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
`, n.Name)
		b.WriteString(client("checkout-"+n.Name, "checkout", n.Name))
	}
	b.WriteString(client("other-"+nodes[0].Name, "other", nodes[0].Name))
	k.must(b.String(), "apply", "-f", "-")
	t.Cleanup(func() {
		k.must("", "delete", "namespace", "payments", "checkout", "--wait=false")
	})
	k.must("", "-n", "payments", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")
	k.must("", "-n", "checkout", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")
	var p l7Pods
	for _, n := range nodes {
		p.payments = append(p.payments, getPod(t, k, "payments", "payment-"+n.Name))
		p.checkouts = append(p.checkouts, getPod(t, k, "checkout", "checkout-"+n.Name))
	}
	p.other = getPod(t, k, "checkout", "other-"+nodes[0].Name)
	return p
}

// paymentPod adds a payment pod on node (removed when the test ends), once
// it is Ready.
func paymentPod(t *testing.T, k *kube, name, node string) corev1.Pod {
	t.Helper()
	k.must(echoPod("payments", name, node, "app: payment"), "apply", "-f", "-")
	t.Cleanup(func() { k.must("", "-n", "payments", "delete", "pod", name, "--wait=false") })
	k.must("", "-n", "payments", "wait", "--for=condition=Ready", "pod", name, "--timeout=90s")
	return getPod(t, k, "payments", name)
}

func getPod(t *testing.T, k *kube, ns, name string) corev1.Pod {
	t.Helper()
	var p corev1.Pod
	mustJSON(t, k.must("", "-n", ns, "get", "pod", name, "-o", "json"), &p)
	return p
}

// curl makes one request from a pod and returns the status code, or
// "000" when no HTTP response came back (refused, reset or timed out).
func curl(k *kube, pod corev1.Pod, method, url string, headers ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-n", pod.Namespace, "exec", pod.Name, "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", "-X", method}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	if method == "POST" {
		args = append(args, "-d", `{"amount": 42}`)
	}
	out, _ := k.run(ctx, "", append(args, url)...)
	return strings.TrimSpace(out)
}

// expectCode waits until every request gets its code.
func expectCode(t *testing.T, k *kube, from corev1.Pod, method, url, want string, headers ...string) {
	t.Helper()
	eventually(t, policyTimeout, fmt.Sprintf("%s: %s %s %v -> %s", from.Name, method, url, headers, want), func() error {
		if got := curl(k, from, method, url, headers...); got != want {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
}

// paymentURLs are every payment pod's address and the Service's.
func paymentURLs(p l7Pods, path string) []string {
	var urls []string
	for _, pay := range p.payments {
		urls = append(urls, "http://"+pay.Status.PodIP+":3000"+path)
	}
	return append(urls, "http://payment.payments:8080"+path)
}

const jsonHeader = "Content-Type: application/json"

// paymentPolicy is the payment service's L7 ingress policy; extraPost is
// added to the POST rule (e.g. a required header).
func paymentPolicy(postRule string) string {
	return paymentsL7Policy("payment-l7", `{method: GET, path: "/api/v1/payments/.*"}`, postRule)
}

// paymentsL7Policy is a policy named name allowing the checkout pods the
// HTTP rules on the payment pods' port 3000.
func paymentsL7Policy(name string, rules ...string) string {
	return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: ` + name + `, namespace: payments}
spec:
  endpointSelector: {matchLabels: {app: payment}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: checkout, k8s:io.kubernetes.pod.namespace: checkout}}]
    toPorts:
    - ports: [{port: "3000", protocol: TCP}]
      rules:
        http:
        - ` + strings.Join(rules, "\n        - ") + `
`
}

// TestL7Policy: the checkout → payment scenario. Ingress L7 rules on the
// payment pods (enforced by their node's Envoy), then egress L7 rules on
// the checkout pods (by theirs), both checked same-node and cross-node;
// a required header; the flows in `membrane observe`; an Envoy killed in a
// request loop; a configuration Envoy rejects; redirects waiting for Envoy,
// holding only the endpoints that need it, and not again after it failed
// to answer; two pods of a node under one policy sharing one filter chain,
// which a second policy joins and leaves without renaming it.
func TestL7Policy(t *testing.T) {
	k := cluster(t)
	p := deployL7(t, k)
	checkout := p.checkouts[0] // on the first node: payments[0] same-node, payments[1] cross-node
	for _, url := range paymentURLs(p, "/api/v1/payments/before-policy") {
		expectCode(t, k, checkout, "DELETE", url, "200")
	}

	k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments$"}`), "apply", "-f", "-")
	for _, from := range p.checkouts {
		for _, url := range paymentURLs(p, "") {
			expectCode(t, k, from, "GET", url+"/api/v1/payments/P123", "200")
			expectCode(t, k, from, "POST", url+"/api/v1/payments", "200", jsonHeader)
			expectCode(t, k, from, "DELETE", url+"/api/v1/payments/123", "403")
			expectCode(t, k, from, "GET", url+"/api/v1/refunds/1", "403")
		}
	}
	// Another app is denied at L3/L4: no HTTP response at all.
	for _, url := range paymentURLs(p, "/api/v1/payments/P123") {
		expectCode(t, k, p.other, "GET", url, "000")
	}
	// The DELETEs never reached a payment pod; the GETs did, from the
	// checkout pod's own address (the proxy keeps the source).
	for _, pay := range p.payments {
		logs := k.must("", "-n", "payments", "logs", pay.Name)
		if strings.Contains(logs, "request made to /api/v1/payments/123 ") {
			t.Errorf("%s got a request the L7 policy denies:\n%s", pay.Name, tail(logs, 20))
		}
		if !strings.Contains(logs, "request made to /api/v1/payments/P123 to client ("+checkout.Status.PodIP+":") {
			t.Errorf("%s has no GET from %s (%s): the source address was lost:\n%s", pay.Name, checkout.Name, checkout.Status.PodIP, tail(logs, 20))
		}
	}
	waitCondition(t, k, "payments", "payment-l7", v1alpha1.ConditionProgrammed, "True", "")

	t.Run("policy trace names the proxy's rules", func(t *testing.T) {
		pay := "payments/" + p.payments[1].Name // the other node's
		got := k.membrane("policy", "trace", "checkout/"+checkout.Name, pay, "--port", "3000")
		if !strings.Contains(got, "ALLOWED to the L7 proxy") || !strings.Contains(got, "ingress of ") ||
			!strings.Contains(got, "the proxy allows method POST, path /api/v1/payments$ (MembraneNetworkPolicy payments/payment-l7") {
			t.Errorf("trace checkout -> payment:\n%s", got)
		}
		if got := k.membrane("policy", "trace", "checkout/"+p.other.Name, pay, "--port", "3000"); !strings.Contains(got, ": DENIED") ||
			!strings.Contains(got, "3000: Policy denied") {
			t.Errorf("trace other -> payment:\n%s", got)
		}
		var tr policy.TraceResult
		mustJSON(t, k.membrane("policy", "trace", "checkout/"+checkout.Name, pay, "--port", "3000/tcp", "-o", "json"), &tr)
		if !tr.Allowed || tr.Ingress.Verdict != policy.Redirect || len(tr.Ingress.L7) == 0 {
			t.Errorf("trace -o json: %+v", tr)
		}
		t.Logf("membrane policy trace checkout/%s %s --port 3000:\n%s", checkout.Name, pay, got)
	})

	t.Run("observe shows the L7 flows", func(t *testing.T) {
		ns := []string{"--namespace", "payments", "--protocol", "http"}
		expectFlow(t, k, append(ns, "--http-method", "GET", "--http-status", "200"),
			"checkout/"+checkout.Name, "payments/payment-", "FORWARDED (HTTP/1.1 200 ", "(GET http://", "/api/v1/payments/P123))")
		expectFlow(t, k, append(ns, "--http-status", "4+", "--http-path", "^/api/v1/payments/"),
			"checkout/"+checkout.Name, "L7 policy denied DROPPED (HTTP/1.1 403 ", "(DELETE http://", "/api/v1/payments/123))")
		out := k.membrane("observe", "--last", "50", "-o", "json", "--namespace", "payments", "--http-method", "DELETE")
		var f flow.Flow
		line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("observe -o json: %v in %q", err, out)
		}
		if f.L7 == nil || f.L7.HTTP == nil || f.L7.HTTP.Method != "DELETE" || f.L7.HTTP.Code != 403 || f.L7.HTTP.Path != "/api/v1/payments/123" || f.Verdict != flow.Dropped {
			t.Errorf("observe -o json: want the DELETE's HTTP fields, got %s", line)
		}
	})

	t.Run("required header", func(t *testing.T) {
		k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments$", headers: ["`+jsonHeader+`"]}`), "apply", "-f", "-")
		for _, url := range paymentURLs(p, "/api/v1/payments") {
			expectCode(t, k, checkout, "POST", url, "403", "Content-Type: text/plain")
			expectCode(t, k, checkout, "POST", url, "200", jsonHeader)
		}
	})

	t.Run("egress rules", func(t *testing.T) {
		k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: checkout-egress, namespace: checkout}
spec:
  endpointSelector: {matchLabels: {app: checkout}}
  egress:
  - toEndpoints: [{matchLabels: {app: payment, k8s:io.kubernetes.pod.namespace: payments}}]
    toPorts:
    - ports: [{port: "3000", protocol: TCP}]
      rules:
        http: [{method: GET}]
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts: [{ports: [{port: "53", protocol: ANY}]}]
`, "apply", "-f", "-")
		defer k.must("", "-n", "checkout", "delete", "mnp", "checkout-egress")
		for _, from := range p.checkouts {
			for _, url := range paymentURLs(p, "/api/v1/payments") {
				expectCode(t, k, from, "GET", url+"/P123", "200")
				// The ingress rules allow it; the egress rules do not.
				expectCode(t, k, from, "POST", url, "403", jsonHeader)
			}
		}
		expectFlow(t, k, []string{"--namespace", "checkout", "--http-method", "POST", "--verdict", "DROPPED"},
			"L7 policy denied DROPPED (HTTP/1.1 403 ", "(POST http://", "/api/v1/payments))")
	})

	t.Run("envoy restart", func(t *testing.T) {
		// Requests from the first node's checkout to the second node's
		// payment pod pass that node's Envoy (ingress rules).
		target := p.payments[1]
		url := "http://" + target.Status.PodIP + ":3000/api/v1/payments/P123"
		loop := startRequestLoop(t, k, checkout, url, 150)
		time.Sleep(2 * time.Second)
		killEnvoy(t, k, target.Spec.NodeName)
		results := loop()
		gap, failed := longestFailure(results)
		t.Logf("envoy on %s killed: %d of %d requests failed, longest outage %s", target.Spec.NodeName, failed, len(results), gap)
		if len(results) == 0 || results[len(results)-1].code != "200" {
			t.Fatalf("requests did not recover: %v", results)
		}
		if gap > 2*time.Second {
			t.Errorf("requests failed for %s after Envoy was killed, want at most 2s", gap)
		}
	})

	t.Run("rejected configuration", func(t *testing.T) {
		// Go's (and the API's) regex syntax takes it; its compiled RE2
		// program is over the size the node Envoys accept.
		k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments/[a-z]{1000}[0-9]{1000}"}`), "apply", "-f", "-")
		waitCondition(t, k, "payments", "payment-l7", v1alpha1.ConditionProgrammed, "False", "program size")
		time.Sleep(time.Second)
		// The previous rules stay in force.
		for _, url := range paymentURLs(p, "/api/v1/payments") {
			expectCode(t, k, checkout, "GET", url+"/P123", "200")
			expectCode(t, k, checkout, "DELETE", url+"/123", "403")
			expectCode(t, k, checkout, "POST", url, "200", jsonHeader)
		}
		out := k.membrane("status")
		if !strings.Contains(out, "rejected") {
			t.Errorf("membrane status does not show the rejection:\n%s", out)
		}
		k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments$"}`), "apply", "-f", "-")
		waitCondition(t, k, "payments", "payment-l7", v1alpha1.ConditionProgrammed, "True", "")
	})

	t.Run("redirects wait for the node proxy", func(t *testing.T) {
		// The port's rules go from L3/L4 only to L7 while the target
		// node's Envoy is frozen: the datapath keeps the connections off
		// the proxy until Envoy runs the port's chain (up to 2s), so
		// requests go on; once thawed, Envoy takes them.
		target := p.payments[1]
		l4 := strings.Split(paymentPolicy(""), "      rules:")[0]
		k.must(l4, "apply", "-f", "-")
		url := "http://" + target.Status.PodIP + ":3000/api/v1/payments/P123"
		expectCode(t, k, checkout, "GET", url, "200")
		node := target.Spec.NodeName
		netns := shared.cluster.Layout().NodeNetns(node)
		waitsBefore := proxyWaits(t, k, node)
		// The node Envoy's redirect listener (chart: proxy.proxyPort).
		const noChainStat = "listener.127.0.0.1_15001.no_filter_chain_match"
		noChainBefore, _ := envoyStatIf(t, netns, noChainStat)
		loop := startRequestLoop(t, k, checkout, url, 25)
		time.Sleep(500 * time.Millisecond)
		thaw := freezeEnvoy(t, k, node)
		k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments$"}`), "apply", "-f", "-")
		frozenAt := time.Now()
		time.Sleep(1200 * time.Millisecond)
		thaw()
		results := loop()
		gap, failed := longestFailure(results)
		t.Logf("%d requests, Envoy frozen for 1.2s as L7 rules came: %d failed (longest outage %s)", len(results), failed, gap)
		if failed != 0 {
			// How the hold ended, and whether Envoy met connections it
			// had no chain for.
			w := proxyWaits(t, k, node)
			for o := range w {
				w[o] -= waitsBefore[o]
			}
			noChain, _ := envoyStatIf(t, netns, noChainStat)
			t.Errorf("%d of %d requests failed (uptime, code): %v; holds since: %v; connections without a chain: %d; policy written %s ago",
				failed, len(results), results, w, noChain-noChainBefore, time.Since(frozenAt).Round(time.Millisecond))
		}
		waitCondition(t, k, "payments", "payment-l7", v1alpha1.ConditionProgrammed, "True", "")
		// Envoy enforces the rules now.
		expectCode(t, k, checkout, "DELETE", "http://"+target.Status.PodIP+":3000/api/v1/payments/123", "403")
	})

	t.Run("a stuck node proxy holds back only its new ports", func(t *testing.T) {
		// Envoy on the target node is frozen (connected, answering
		// nothing). A new payment pod there adds a redirected port: the
		// pod waits for Envoy (waiting-for-proxy), for 2s, while the
		// node's regenerations go on (none takes 1s). A second one, while
		// Envoy still runs nothing newer, does not wait.
		node := p.payments[1].Spec.NodeName
		slow := func() float64 {
			var count, fast float64
			for _, l := range agentMetric(t, k, node, "membrane_policy_regeneration_seconds") {
				f := strings.Fields(l)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				switch le, ok := strings.CutPrefix(l, `membrane_policy_regeneration_seconds_bucket{le="`); {
				case strings.HasPrefix(l, "membrane_policy_regeneration_seconds_count"):
					count = v
				case ok:
					// The bucket of 1 s.
					if b, err := strconv.ParseFloat(strings.Split(le, `"`)[0], 64); err == nil && b >= 1 && b < 1.1 {
						fast = v
					}
				}
			}
			return count - fast
		}
		waits := func() map[string]float64 { return proxyWaits(t, k, node) }
		// states polls the endpoint list until the pod is ready, and
		// returns the states it was seen in, in order.
		states := func(name string) []string {
			var seen []string
			eventually(t, policyTimeout, name+" programmed", func() error {
				var lists []agentapi.EndpointList
				if err := json.Unmarshal([]byte(k.membrane("endpoint", "list", "--node", node, "-o", "json")), &lists); err != nil {
					return err
				}
				for _, l := range lists {
					for _, e := range l.Endpoints {
						if e.Namespace == "payments" && e.Pod == name {
							if len(seen) == 0 || seen[len(seen)-1] != e.State {
								seen = append(seen, e.State)
							}
							if e.State == agentapi.StateReady {
								return nil
							}
						}
					}
				}
				return fmt.Errorf("not ready: seen %v", seen)
			})
			return seen
		}
		slowBefore, waitsBefore := slow(), waits()
		defer func() {
			if t.Failed() {
				t.Logf("phases:\n%s", strings.Join(agentMetric(t, k, node, "membrane_policy_regeneration_phase_seconds"), "\n"))
				out, _ := k.run(context.Background(), "", "-n", "kube-system", "logs", "-l", "k8s-app=membrane-agent", "--tail", "60", "--prefix")
				t.Logf("agent logs:\n%s", out)
			}
		}()
		thaw := freezeEnvoy(t, k, node)
		k.must(echoPod("payments", "payment-c", node, "app: payment"), "apply", "-f", "-")
		t.Cleanup(func() { k.must("", "-n", "payments", "delete", "pod", "payment-c", "--wait=false") })
		if seen := states("payment-c"); !slices.Contains(seen, agentapi.StateWaitingForProxy) {
			t.Errorf("payment-c went through %v: want %s before %s", seen, agentapi.StateWaitingForProxy, agentapi.StateReady)
		}
		eventually(t, policyTimeout, "payment-c's wait timed out", func() error {
			if got := waits()["timeout"] - waitsBefore["timeout"]; got != 1 {
				return fmt.Errorf("%v waits timed out", got)
			}
			return nil
		})
		d := paymentPod(t, k, "payment-d", node)
		if seen := states("payment-d"); slices.Contains(seen, agentapi.StateWaitingForProxy) {
			t.Errorf("payment-d went through %v while Envoy stayed frozen: want no wait for it", seen)
		}
		w := waits()
		if got := w["skipped"] - waitsBefore["skipped"]; got < 1 {
			t.Errorf("%v waits skipped while Envoy stayed frozen: want payment-d's", got)
		}
		if got := w["timeout"] - waitsBefore["timeout"]; got != 1 {
			t.Errorf("%v waits timed out: want 1 (payment-c's)", got)
		}
		if got := slow() - slowBefore; got != 0 {
			t.Errorf("%v regenerations took over 1s while Envoy was frozen: want none (a wait holds the endpoints, not the regeneration)", got)
		}
		thaw()
		expectCode(t, k, checkout, "DELETE", "http://"+d.Status.PodIP+":3000/api/v1/payments/123", "403")
		expectCode(t, k, checkout, "GET", "http://"+d.Status.PodIP+":3000/api/v1/payments/P123", "200")
	})

	t.Run("invalid rules", func(t *testing.T) {
		// A header given as an object: the CRD's schema refuses it.
		_, err := k.run(t.Context(), paymentPolicy(`{method: POST, headers: [{name: Content-Type}]}`), "apply", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "spec.ingress[0].toPorts[0].rules.http[1].headers[0]") {
			t.Errorf("a header given as an object: want a rejection naming the field, got %v", err)
		}
		// An invalid regex: refused with the field; the last valid version stays.
		_, err = k.run(t.Context(), paymentPolicy(`{method: POST, path: "/api/v1/(["}`), "apply", "-f", "-")
		if err == nil {
			waitCondition(t, k, "payments", "payment-l7", v1alpha1.ConditionValid, "False", "spec.ingress[0].toPorts[0].rules.http[1].path")
		} else if !strings.Contains(err.Error(), "spec.ingress[0].toPorts[0].rules.http[1].path") {
			t.Errorf("an invalid path regex: want a rejection naming the field, got %v", err)
		}
		expectCode(t, k, checkout, "GET", paymentURLs(p, "/api/v1/payments/P123")[1], "200")
		expectCode(t, k, checkout, "DELETE", paymentURLs(p, "/api/v1/payments/123")[1], "403")
	})

	t.Run("pods under one policy share a chain", func(t *testing.T) {
		k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments$"}`), "apply", "-f", "-")
		node := shared.cluster.Nodes[0]
		b := paymentPod(t, k, "payment-b", node.Name)
		url := "http://" + b.Status.PodIP + ":3000"
		expectCode(t, k, checkout, "DELETE", url+"/api/v1/payments/123", "403")
		expectCode(t, k, checkout, "GET", url+"/api/v1/payments/P123", "200")
		// Both payment pods of the node are one group: one filter chain
		// (and route configuration) of port 3000 in the node's Envoy.
		out := envoyAdmin(t, shared.cluster.Layout().NodeNetns(node.Name), "/config_dump?resource=dynamic_listeners")
		chains := map[string]bool{}
		for _, m := range regexp.MustCompile(`"name": "(ingress/[^"]*:3000)"`).FindAllStringSubmatch(out, -1) {
			chains[m[1]] = true
		}
		if len(chains) != 1 {
			t.Errorf("node %s's Envoy has the ingress chains %v for port 3000: want one, shared by %s and %s", node.Name, slices.Sorted(maps.Keys(chains)), p.payments[0].Name, b.Name)
		}
	})

	t.Run("a policy joining a group keeps its chain", func(t *testing.T) {
		// A second policy selecting every payment pod on port 3000 joins
		// the policies of the node's payment group: its rule reaches the
		// group's route configuration, the chain keeps its name and Envoy
		// drains nothing (a renamed chain would be drained); the same after
		// the node's agent restarts, and when the policy leaves again.
		target := p.payments[0]
		netns := shared.cluster.Layout().NodeNetns(target.Spec.NodeName)
		chains := func() []string {
			var out []string
			for _, m := range regexp.MustCompile(`"name": "(ingress/[^"]*:3000)"`).FindAllStringSubmatch(envoyAdmin(t, netns, "/config_dump?resource=dynamic_listeners"), -1) {
				out = append(out, m[1])
			}
			slices.Sort(out)
			return slices.Compact(out)
		}
		stat := func(name string) int { return envoyStat(t, netns, name) }
		draining := func() int { return stat("listener_manager.total_filter_chains_draining") }
		audit := paymentsL7Policy("payment-audit", `{method: GET, path: "/api/v1/audit/.*"}`)
		url := "http://" + target.Status.PodIP + ":3000/api/v1/audit/1"
		expectCode(t, k, checkout, "GET", url, "403")
		before, drainingBefore := chains(), draining()
		if len(before) != 1 {
			t.Fatalf("ingress chains of port 3000: %v, want one", before)
		}
		k.must(audit, "apply", "-f", "-")
		t.Cleanup(func() { k.must("", "-n", "payments", "delete", "mnp", "payment-audit", "--ignore-not-found") })
		expectCode(t, k, checkout, "GET", url, "200")
		expectCode(t, k, checkout, "DELETE", "http://"+target.Status.PodIP+":3000/api/v1/payments/123", "403")
		if got := chains(); !slices.Equal(got, before) {
			t.Errorf("a policy joined the group: chains %v, want %v kept", got, before)
		}
		// A restarted agent publishes the group's chain under the name
		// it had, which is no longer its policies' digest: the node's
		// Envoy, which kept running, keeps it.
		updates := stat("listener_manager.lds.update_success")
		if err := localcluster.RestartAgent(t.Context(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), sharedName, target.Spec.NodeName); err != nil {
			t.Fatal(err)
		}
		eventually(t, policyTimeout, "the node's Envoy took the restarted agent's listeners", func() error {
			if n := stat("listener_manager.lds.update_success"); n <= updates {
				return fmt.Errorf("%d listener updates, %d before the restart", n, updates)
			}
			return nil
		})
		if got := chains(); !slices.Equal(got, before) {
			t.Errorf("the agent restarted: chains %v, want %v kept", got, before)
		}
		expectCode(t, k, checkout, "GET", url, "200")
		k.must("", "-n", "payments", "delete", "mnp", "payment-audit")
		expectCode(t, k, checkout, "GET", url, "403")
		if got := chains(); !slices.Equal(got, before) {
			t.Errorf("the policy left the group: chains %v, want %v kept", got, before)
		}
		if got := draining(); got > drainingBefore {
			t.Errorf("%d filter chains draining, %d before: want none more", got, drainingBefore)
		}
	})
}

// waitCondition waits for a MembraneNetworkPolicy's condition.
func waitCondition(t *testing.T, k *kube, ns, name, typ, status, inMessage string) {
	t.Helper()
	eventually(t, policyTimeout, fmt.Sprintf("%s/%s %s=%s %q", ns, name, typ, status, inMessage), func() error {
		var p v1alpha1.MembraneNetworkPolicy
		out, err := k.run(t.Context(), "", "-n", ns, "get", "mnp", name, "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return err
		}
		c := meta.FindStatusCondition(p.Status.Conditions, typ)
		if c == nil || string(c.Status) != status || !strings.Contains(c.Message, inMessage) || c.ObservedGeneration != p.Generation {
			return fmt.Errorf("condition %+v at generation %d", c, p.Generation)
		}
		return nil
	})
}

type httpResult struct {
	at   time.Duration // the node's uptime (/proc/uptime, 10 ms resolution)
	code string
}

// startRequestLoop makes n requests, 100 ms apart, from pod; the returned
// function waits for the loop and gives each request's end time and code.
// (busybox's date has no sub-second format: the clock is /proc/uptime.)
func startRequestLoop(t *testing.T, k *kube, pod corev1.Pod, url string, n int) func() []httpResult {
	t.Helper()
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do c=$(curl -s -o /dev/null -w '%%{http_code}' -m 1 %s); read up idle < /proc/uptime; echo "$up $c"; i=$((i+1)); sleep 0.1; done`, n, url)
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(n)*1500*time.Millisecond)
	done := make(chan string, 1)
	go func() {
		out, err := k.run(ctx, "", "-n", pod.Namespace, "exec", pod.Name, "--", "sh", "-c", script)
		if err != nil {
			out += "\nerror: " + err.Error()
		}
		done <- out
	}()
	return func() []httpResult {
		defer cancel()
		out := <-done
		var res []httpResult
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			ts, code, ok := strings.Cut(line, " ")
			up, err := strconv.ParseFloat(ts, 64)
			if !ok || err != nil {
				t.Fatalf("request loop: bad line %q in:\n%s", line, out)
			}
			res = append(res, httpResult{at: time.Duration(up * float64(time.Second)), code: code})
		}
		return res
	}
}

// longestFailure is the longest time between the last success before a
// run of failures and the first success after it, and the failure count.
func longestFailure(rs []httpResult) (time.Duration, int) {
	var longest time.Duration
	failed := 0
	lastOK := time.Duration(-1)
	inFailure := false
	for _, r := range rs {
		if r.code != "200" {
			failed++
			inFailure = true
			continue
		}
		if inFailure && lastOK >= 0 {
			longest = max(longest, r.at-lastOK)
		}
		inFailure = false
		lastOK = r.at
	}
	return longest, failed
}

// killEnvoy kills (SIGKILL) the processes of the node's Envoy pod, found
// through the pod's cgroup.
func killEnvoy(t *testing.T, k *kube, node string) {
	t.Helper()
	dir, pod := envoyCgroup(t, k, node)
	killed := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(raw)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return err
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				killed++
			}
		}
		return nil
	})
	if err != nil || killed == 0 {
		t.Fatalf("kill Envoy on %s: killed %d processes: %v", node, killed, err)
	}
	t.Logf("killed %d Envoy process(es) of %s on %s", killed, pod, node)
}

// freezeEnvoy freezes the node's Envoy pod (its cgroup's cgroup.freeze):
// it keeps its connections and answers nothing. The returned function
// thaws it, as the test's cleanup does.
func freezeEnvoy(t *testing.T, k *kube, node string) (thaw func()) {
	t.Helper()
	dir, pod := envoyCgroup(t, k, node)
	file := filepath.Join(dir, "cgroup.freeze")
	thaw = func() {
		if err := os.WriteFile(file, []byte("0"), 0); err != nil {
			t.Errorf("thaw Envoy pod %s: %v", pod, err)
		}
	}
	if err := os.WriteFile(file, []byte("1"), 0); err != nil {
		t.Fatalf("freeze Envoy pod %s: %v", pod, err)
	}
	t.Cleanup(thaw)
	return thaw
}

// envoyCgroup is the cgroup directory and name of the node's Envoy pod.
func envoyCgroup(t *testing.T, k *kube, node string) (dir, pod string) {
	t.Helper()
	var pods corev1.PodList
	mustJSON(t, k.must("", "-n", "kube-system", "get", "pods", "-l", "k8s-app=membrane-envoy",
		"--field-selector", "spec.nodeName="+node, "-o", "json"), &pods)
	if len(pods.Items) != 1 {
		t.Fatalf("%d Envoy pods on %s, want 1", len(pods.Items), node)
	}
	dirs, err := filepath.Glob(filepath.Join(shared.cluster.Layout().CgroupDir(shared.cluster.CgroupRoot), node, "pods", string(pods.Items[0].UID)))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("cgroup of Envoy pod %s: %v %v", pods.Items[0].Name, dirs, err)
	}
	return dirs[0], pods.Items[0].Name
}

// proxyWaits are node's agent's holds for its Envoy by how they ended
// (membrane_proxy_waits_total).
func proxyWaits(t *testing.T, k *kube, node string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range agentMetric(t, k, node, "membrane_proxy_waits_total{") {
		outcome, _, _ := strings.Cut(strings.TrimPrefix(l, `membrane_proxy_waits_total{outcome="`), `"`)
		f := strings.Fields(l)
		out[outcome], _ = strconv.ParseFloat(f[len(f)-1], 64)
	}
	return out
}

package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// The DNS-aware policy scenario: a worker pod in default that may reach
// api.example.com (the outside world's host "api", port 80) by name, and
// cluster DNS through the node's DNS proxy.

// fqdnWorld are the world's addresses on the shared cluster.
type fqdnWorld struct {
	layout       localcluster.Layout
	api, other   netip.Addr // the HTTP hosts api and other
	apiURL       string     // http://api.example.com/
	otherNameURL string     // http://other.example.com/
}

func newFQDNWorld(t *testing.T) fqdnWorld {
	t.Helper()
	l := shared.cluster.Layout()
	api, ok1 := l.WorldHost("api")
	other, ok2 := l.WorldHost("other")
	if !ok1 || !ok2 {
		t.Fatal("the cluster has no world hosts api and other")
	}
	return fqdnWorld{layout: l, api: api.IP, other: other.IP,
		apiURL: "http://api." + localcluster.WorldZone + "/", otherNameURL: "http://other." + localcluster.WorldZone + "/"}
}

// setRecord points name at ips with ttl, and restores the initial zone
// when the test ends.
func (w fqdnWorld) setRecord(t *testing.T, name string, ttl uint32, ips ...netip.Addr) {
	t.Helper()
	if err := localcluster.SetWorldRecord(w.layout, name, ips, ttl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := localcluster.ResetWorldZone(w.layout); err != nil {
			t.Errorf("restore the world zone: %v", err)
		}
	})
}

// fqdnPod starts a curl pod name (label app=name) in default on node.
func fqdnPod(t *testing.T, k *kube, name, node string) corev1.Pod {
	t.Helper()
	k.must(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default, labels: {app: %[1]s}}
spec:
  nodeName: %[2]s
  terminationGracePeriodSeconds: 0
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: [sleep, "3600"]
`, name, node), "apply", "-f", "-")
	t.Cleanup(func() {
		k.must("", "-n", "default", "delete", "pod/"+name, "membranenetworkpolicy/"+name, "--ignore-not-found", "--wait=false")
	})
	k.must("", "-n", "default", "wait", "--for=condition=Ready", "pod/"+name, "--timeout=90s")
	return getPod(t, k, "default", name)
}

// fqdnWorker starts the worker pod (curl, busybox nslookup) and a backend
// Service in default, on the first node.
func fqdnWorker(t *testing.T, k *kube) corev1.Pod {
	t.Helper()
	k.must(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: worker, namespace: default, labels: {app: worker}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 0
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  selector: {app: fqdn-backend}
  ports: [{port: 80}]
`, shared.cluster.Nodes[0].Name), "apply", "-f", "-")
	t.Cleanup(func() {
		k.must("", "-n", "default", "delete", "pod/worker", "service/backend", "membranenetworkpolicy/worker", "--ignore-not-found", "--wait=false")
	})
	k.must("", "-n", "default", "wait", "--for=condition=Ready", "pod/worker", "--timeout=90s")
	return getPod(t, k, "default", "worker")
}

// workerPolicy is the worker's egress policy: HTTP to toFQDNs, and DNS to
// kube-dns through the DNS proxy with the given rules.dns entries.
func workerPolicy(fqdns, dnsRules string) string {
	return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: worker, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: worker}}
  egress:
  - toFQDNs: ` + fqdns + `
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: "53", protocol: UDP}, {port: "53", protocol: TCP}]
      rules:
        dns: ` + dnsRules + `
`
}

// curlBody makes one request from the pod and returns the body, or an
// error when no HTTP answer came back.
func curlBody(k *kube, pod corev1.Pod, url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return k.run(ctx, "", "-n", pod.Namespace, "exec", pod.Name, "--", "curl", "-sf", "-m", "3", url)
}

// getService returns a Service.
func getService(t *testing.T, k *kube, ns, name string) corev1.Service {
	t.Helper()
	var svc corev1.Service
	mustJSON(t, k.must("", "-n", ns, "get", "service", name, "-o", "json"), &svc)
	return svc
}

// nslookup runs busybox nslookup in the pod and returns its output.
func nslookup(k *kube, pod corev1.Pod, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return k.run(ctx, "", "-n", pod.Namespace, "exec", pod.Name, "--", "nslookup", name)
}

// expectBody waits until a request to url answers with want in its body.
func expectBody(t *testing.T, k *kube, pod corev1.Pod, url, want string) {
	t.Helper()
	eventually(t, policyTimeout, fmt.Sprintf("%s: GET %s answers %q", pod.Name, url, want), func() error {
		out, err := curlBody(k, pod, url)
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("answer %q", out)
		}
		return nil
	})
}

// expectNoAnswer waits until a request to url gets no HTTP answer.
func expectNoAnswer(t *testing.T, k *kube, pod corev1.Pod, url string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s: GET %s dropped", pod.Name, url), func() error {
		if out, err := curlBody(k, pod, url); err == nil {
			return fmt.Errorf("answered %q", out)
		}
		return nil
	})
}

// tcpQuery asks server name's A records over TCP from the network
// namespace nsPath and returns the response code.
func tcpQuery(nsPath string, server netip.AddrPort, name string) (dnsmessage.RCode, error) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 4711, RecursionDesired: true})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return 0, err
	}
	q, err := b.Finish()
	if err != nil {
		return 0, err
	}
	var rcode dnsmessage.RCode
	err = netns.Do(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", server.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)); err != nil {
			return err
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return err
		}
		resp := make([]byte, int(l[0])<<8|int(l[1]))
		if _, err := io.ReadFull(c, resp); err != nil {
			return err
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			return err
		}
		if m.Header.ID != 4711 {
			return fmt.Errorf("answer ID %d", m.Header.ID)
		}
		rcode = m.Header.RCode
		return nil
	})
	return rcode, err
}

// agentMetric returns the node agent's metrics lines starting with prefix.
func agentMetric(t *testing.T, k *kube, node, prefix string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(k.must("", "get", "--raw", "/api/v1/nodes/"+node+":9890/proxy/metrics"), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// TestFQDNPolicy: toFQDNs allow exactly the addresses the DNS proxy
// learned for the names they select; DNS rules refuse other questions
// (REFUSED, a DROPPED DNS flow); a changed record moves the allowance to
// the new address once the old one's TTL passed and it is idle; invalid
// selectors are refused and the previous version stays in force.
func TestFQDNPolicy(t *testing.T) {
	k := cluster(t)
	w := newFQDNWorld(t)
	worker := fqdnWorker(t, k)
	node := worker.Spec.NodeName
	apiIPURL := "http://" + w.api.String() + "/"
	otherIPURL := "http://" + w.other.String() + "/"

	// Without policy the world is reachable, by name and by address.
	expectBody(t, k, worker, w.apiURL, "api api.example.com")
	expectBody(t, k, worker, otherIPURL, "other")

	t.Run("toFQDNs", func(t *testing.T) {
		// A policy for another name: api.example.com's answers go through
		// the proxy but teach nothing, and its address is dropped.
		k.must(workerPolicy(`[{matchName: other.example.com}]`, `[{matchPattern: "*"}]`), "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "True", "")
		expectNoAnswer(t, k, worker, w.apiURL, policyTimeout)
		// Another pod on the node, whose own policy selects api.example.com,
		// learns its address.
		learner := fqdnPod(t, k, "learner", worker.Spec.NodeName)
		k.must(strings.NewReplacer("name: worker", "name: learner", "app: worker", "app: learner").Replace(
			workerPolicy(`[{matchName: api.example.com}]`, `[{matchPattern: "*"}]`)), "apply", "-f", "-")
		waitValid(t, k, "default", "learner", "True", "")
		expectBody(t, k, learner, w.apiURL, "api api.example.com")
		// Now the worker's policy selects api.example.com: the answers from
		// before it (the worker's, through the other policy, and the
		// learner's) do not count; the address is dropped until a new
		// answer arrives.
		k.must(workerPolicy(`[{matchName: api.example.com}]`, `[{matchPattern: "*"}]`), "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "True", "")
		eventually(t, policyTimeout, "the worker's policy selects api.example.com on its node", func() error {
			if out := k.membrane("policy", "get", "-n", "default", worker.Name); !strings.Contains(out, "toFQDNs: matchName: api.example.com") {
				return fmt.Errorf("membrane policy get:\n%s", out)
			}
			return nil
		})
		if out, err := curlBody(k, worker, apiIPURL); err == nil {
			t.Errorf("GET %s answered %q before any answer under the policy: answers from before it were trusted", apiIPURL, out)
		}
		line := expectFlow(t, k, []string{"-n", "default", "--verdict", "DROPPED"}, "default/worker", w.api.String()+":80", "Policy denied", "DROPPED")
		t.Logf("drop before the lookup: %s", line)
		// Through the name: allowed.
		start := time.Now()
		expectBody(t, k, worker, w.apiURL, "api api.example.com")
		t.Logf("api.example.com allowed after %s", time.Since(start).Round(time.Millisecond))
		// Another name resolves (the DNS rule allows every name) but its
		// address is not allowed, by name or by address.
		expectNoAnswer(t, k, worker, w.otherNameURL, policyTimeout)
		expectNoAnswer(t, k, worker, otherIPURL, policyTimeout)
		expectFlow(t, k, []string{"-n", "default", "--verdict", "DROPPED"}, "default/worker", w.other.String()+":80", "Policy denied")
		// The DNS flows, as l7 and as dns.
		line = expectFlow(t, k, []string{"-n", "default", "--protocol", "dns"}, "default/worker", "api.example.com.", w.api.String(), "FORWARDED")
		t.Logf("DNS flow: %s", line)
		expectFlow(t, k, []string{"-n", "default", "--type", "l7"}, "dns-response", "api.example.com.", "FORWARDED")
		// The name cache.
		cache := k.membrane("fqdn", "cache", "list", "--node", node)
		if !strings.Contains(cache, "api.example.com.") || !strings.Contains(cache, w.api.String()) || !strings.Contains(cache, "default/worker") {
			t.Errorf("membrane fqdn cache list --node %s lacks api.example.com. %s default/worker:\n%s", node, w.api, cache)
		}
		if strings.Contains(cache, "other.example.com.") {
			t.Errorf("the cache holds other.example.com., which no toFQDNs selects:\n%s", cache)
		}
		t.Logf("fqdn cache:\n%s", cache)
	})

	t.Run("dns rules", func(t *testing.T) {
		// "*" matches within one label (Cilium's): "**." reaches the
		// search list's names (backend.default.svc.cluster.local).
		k.must(workerPolicy(`[{matchName: api.example.com}]`, `[{matchPattern: "**.cluster.local"}, {matchName: api.example.com}]`), "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "True", "")
		// busybox nslookup asks every search domain and exits 1 when one
		// of them has no such name: what counts is backend's answer.
		svc := getService(t, k, "default", "backend")
		eventually(t, policyTimeout, "nslookup backend", func() error {
			out, _ := nslookup(k, worker, "backend")
			if !strings.Contains(out, "backend.default.svc.cluster.local") || !strings.Contains(out, "Address: "+svc.Spec.ClusterIP) || strings.Contains(out, "REFUSED") {
				return fmt.Errorf("nslookup backend:\n%s", out)
			}
			return nil
		})
		eventually(t, policyTimeout, "nslookup other.example.com refused", func() error {
			out, err := nslookup(k, worker, "other.example.com.")
			if err == nil || !strings.Contains(out, "REFUSED") {
				return fmt.Errorf("nslookup: %v: %s", err, out)
			}
			return nil
		})
		line := expectFlow(t, k, []string{"-n", "default", "--protocol", "dns", "--verdict", "DROPPED"},
			"default/worker", "other.example.com.", "DNS query refused by policy", "REFUSED", "DROPPED")
		t.Logf("refused: %s", line)
		expectBody(t, k, worker, w.apiURL, "api api.example.com")
		// DNS over TCP takes the same way (the pod's resolver uses UDP):
		// questions from the worker's network namespace to a CoreDNS pod.
		dnsPod := k.pods("kube-system", "k8s-app=kube-dns")[0]
		server := netip.AddrPortFrom(netip.MustParseAddr(dnsPod.Status.PodIP), 53)
		podNS := filepath.Join(shared.cluster.Layout().RunDir(), "netns", worker.Spec.NodeName, string(worker.UID))
		for _, q := range []struct {
			name  string
			rcode dnsmessage.RCode
		}{{"api.example.com.", dnsmessage.RCodeSuccess}, {"other.example.com.", dnsmessage.RCodeRefused}} {
			rcode, err := tcpQuery(podNS, server, q.name)
			if err != nil || rcode != q.rcode {
				t.Errorf("%s over TCP to %s: %v %v, want %v", q.name, server, rcode, err, q.rcode)
			}
		}
		expectFlow(t, k, []string{"-n", "default", "--protocol", "dns", "--protocol", "tcp"}, "other.example.com.", "REFUSED")
		if m := agentMetric(t, k, node, `membrane_dns_requests_total{rcode="REFUSED",verdict="DROPPED"}`); len(m) == 0 {
			t.Errorf("no membrane_dns_requests_total for refused questions on %s", node)
		} else {
			t.Logf("%s", m[0])
		}
	})

	t.Run("record changes", func(t *testing.T) {
		// A name of its own (api.example.com's address was learned with
		// TTL 30 above), on the api host with TTL 2 s.
		const moving = "moving." + localcluster.WorldZone
		movingURL := "http://" + moving + "/"
		k.must(workerPolicy(`[{matchName: `+moving+`}]`, `[{matchPattern: "*"}]`), "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "True", "")
		w.setRecord(t, moving, 2, w.api)
		expectBody(t, k, worker, movingURL, "api "+moving)
		// It moves to the other host.
		w.setRecord(t, moving, 2, w.other)
		moved := time.Now()
		expectBody(t, k, worker, movingURL, "other "+moving)
		t.Logf("new address allowed %s after the change", time.Since(moved).Round(time.Millisecond))
		// The cache has it (within its 2 s TTL).
		eventually(t, policyTimeout, "fqdn cache list shows the new address", func() error {
			if _, err := curlBody(k, worker, movingURL); err != nil {
				return err
			}
			if cache := k.membrane("fqdn", "cache", "list", "--node", node); !strings.Contains(cache, w.other.String()) {
				return fmt.Errorf("no %s in:\n%s", w.other, cache)
			}
			return nil
		})
		// The old address, idle and past its TTL, is not allowed any more.
		expectNoAnswer(t, k, worker, apiIPURL, 30*time.Second)
		t.Logf("old address dropped %s after the change", time.Since(moved).Round(time.Millisecond))
	})

	t.Run("invalid selectors", func(t *testing.T) {
		good := workerPolicy(`[{matchName: api.example.com}]`, `[{matchPattern: "*"}]`)
		k.must(good, "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "True", "")
		expectBody(t, k, worker, w.apiURL, "api api.example.com")
		// Refused by the CRD schema: nothing is stored.
		for _, bad := range []string{`[{matchName: ""}]`, `[{matchName: "api example.com"}]`} {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			_, err := k.run(ctx, workerPolicy(bad, `[{matchPattern: "*"}]`), "apply", "-f", "-")
			cancel()
			if err == nil || !strings.Contains(err.Error(), "matchName") {
				t.Errorf("toFQDNs %s: apply: %v, want a refusal naming matchName", bad, err)
			}
		}
		// Stored, but invalid: Valid=False names the field; the previous
		// version stays in force.
		k.must(workerPolicy(`[{matchPattern: "api.**.example.com"}]`, `[{matchPattern: "*"}]`), "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "False", "spec.egress[0].toFQDNs[0].matchPattern")
		k.must(workerPolicy(`[{matchName: api.example.com}]`, `[{matchPattern: "a.**.b"}]`), "apply", "-f", "-")
		waitValid(t, k, "default", "worker", "False", "spec.egress[1].toPorts[0].rules.dns[0].matchPattern")
		expectBody(t, k, worker, w.apiURL, "api api.example.com")
		expectNoAnswer(t, k, worker, otherIPURL, policyTimeout)
	})
}

// TestFQDNAgentRestart: requests to a toFQDNs name go on while the node's
// agent restarts: the learned names are kept on the node, and established
// and new connections keep working. Failed requests are reported (target 0).
func TestFQDNAgentRestart(t *testing.T) {
	k := cluster(t)
	w := newFQDNWorld(t)
	worker := fqdnWorker(t, k)
	k.must(workerPolicy(`[{matchName: api.example.com}]`, `[{matchPattern: "*"}]`), "apply", "-f", "-")
	waitValid(t, k, "default", "worker", "True", "")
	expectBody(t, k, worker, w.apiURL, "api api.example.com")

	const requests = 60
	// A client's timeout of 10 s leaves its resolver (5 s timeout) one
	// retry of a question lost while the agent was down.
	loop := fmt.Sprintf(`ok=0; fail=0; for i in $(seq 1 %d); do
  if out=$(curl -sS -f -m 10 -o /dev/null -w '%%{time_total}' http://api.example.com/ 2>&1); then ok=$((ok+1)); echo "ok $i $(date +%%T) ${out}s"; else fail=$((fail+1)); echo "fail $i $(date +%%T) $out"; fi
  sleep 0.2
done; echo "ok=$ok fail=$fail"`, requests)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := k.run(ctx, "", "-n", "default", "exec", worker.Name, "--", "sh", "-c", loop)
		done <- result{out, err}
	}()
	time.Sleep(3 * time.Second)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	restarted := time.Now()
	if _, err := localcluster.Restart(t.Context(), log, sharedName, "membrane-agent/"+worker.Spec.NodeName); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "restarted agent healthy", func() error {
		_, err := k.run(t.Context(), "", "get", "--raw", "/api/v1/nodes/"+worker.Spec.NodeName+":9890/proxy/healthz")
		return err
	})
	t.Logf("agent restarted and healthy in %s", time.Since(restarted).Round(time.Millisecond))
	r := <-done
	if r.err != nil {
		t.Fatalf("request loop: %v\n%s", r.err, r.out)
	}
	t.Logf("agent restarted at %s; request loop (%d requests):\n%s", restarted.Format("15:04:05.000"), requests, strings.TrimSpace(r.out))
	if !strings.Contains(r.out, fmt.Sprintf("ok=%d fail=0", requests)) {
		agentLog, _ := os.ReadFile(filepath.Join(shared.cluster.Layout().LogDir(), "agent-"+worker.Spec.NodeName+".log"))
		t.Errorf("requests failed during the agent restart (target 0); the agent's log ends:\n%s", tail(string(agentLog), 60))
	}

	// The learned names come back from the node, not from new answers: after
	// another restart, with no lookup since, the address is still allowed.
	expectBody(t, k, worker, w.apiURL, "api api.example.com") // learned now, TTL 30 s
	apiIPURL := "http://" + w.api.String() + "/"
	if _, err := localcluster.Restart(t.Context(), log, sharedName, "membrane-agent/"+worker.Spec.NodeName); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "agent healthy after the second restart", func() error {
		_, err := k.run(t.Context(), "", "get", "--raw", "/api/v1/nodes/"+worker.Spec.NodeName+":9890/proxy/healthz")
		return err
	})
	start := time.Now()
	for time.Since(start) < 5*time.Second { // several regenerations after the restart
		if out, err := curlBody(k, worker, apiIPURL); err != nil || !strings.Contains(out, "api") {
			t.Fatalf("GET %s (no lookup since the restart) %.1fs after it: %v %q: the learned name was not kept", apiIPURL, time.Since(start).Seconds(), err, out)
		}
	}
	agentLog, _ := os.ReadFile(filepath.Join(shared.cluster.Layout().LogDir(), "agent-"+worker.Spec.NodeName+".log"))
	if loaded := strings.LastIndex(string(agentLog), `msg="name cache loaded"`); loaded < 0 || strings.Contains(string(agentLog[loaded:min(len(agentLog), loaded+300)]), "entries=0") {
		t.Errorf("the restarted agent loaded no names; its log ends:\n%s", tail(string(agentLog), 30))
	}
	cache := k.membrane("fqdn", "cache", "list", "--node", worker.Spec.NodeName)
	if !strings.Contains(cache, "api.example.com.") {
		t.Errorf("after the restart the fqdn cache lacks api.example.com.:\n%s", cache)
	}
}

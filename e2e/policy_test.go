package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// policyTimeout bounds how long a policy change may take to be enforced in
// these tests (the benchmark measures the real latency).
const policyTimeout = 20 * time.Second

// fetch runs wget in a pod and reports whether it got an answer.
func fetch(k *kube, ns, pod, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := k.run(ctx, "", "-n", ns, "exec", pod, "--", "timeout", "3", "wget", "-qO-", url)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Hello from Backend") {
		return fmt.Errorf("unexpected answer %q", out)
	}
	return nil
}

// expectReach waits until every pod reaches (or, with want false, fails
// to reach) every URL.
func expectReach(t *testing.T, k *kube, ns string, pods, urls []string, want bool) {
	t.Helper()
	what := "denied"
	if want {
		what = "allowed"
	}
	for _, pod := range pods {
		for _, url := range urls {
			eventually(t, policyTimeout, fmt.Sprintf("%s -> %s %s", pod, url, what), func() error {
				err := fetch(k, ns, pod, url)
				switch {
				case want && err != nil:
					return err
				case !want && err == nil:
					return fmt.Errorf("answered")
				}
				return nil
			})
		}
	}
}

// expectFlow waits until `membrane observe` with args shows a line with
// every one of want.
func expectFlow(t *testing.T, k *kube, args []string, want ...string) string {
	t.Helper()
	var found string
	eventually(t, policyTimeout, fmt.Sprintf("observe %v shows %q", args, want), func() error {
		out := k.membrane(append([]string{"observe", "--last", "500"}, args...)...)
		for _, line := range strings.Split(out, "\n") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				found = line
				return nil
			}
		}
		return fmt.Errorf("no such flow in:\n%s", out)
	})
	return found
}

// otherPod starts a busybox pod labelled app=other and returns its name.
func otherPod(t *testing.T, k *kube, ns, name, app string) corev1.Pod {
	t.Helper()
	k.must("", "-n", ns, "run", name, "--image=busybox:1.36", "--restart=Never", "--labels=app="+app, "--", "sleep", "3600")
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=60s")
	var p corev1.Pod
	mustJSON(t, k.must("", "-n", ns, "get", "pod", name, "-o", "json"), &p)
	return p
}

func podNames(ps []corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// backendURLs are the backend pods' addresses (one per node) and the
// Service's name.
func backendURLs(backends []corev1.Pod) []string {
	urls := []string{"http://backend:8080/"}
	for _, b := range backends {
		urls = append(urls, "http://"+b.Status.PodIP+":8080/")
	}
	return urls
}

// checkSpread makes sure the backends are on both nodes, so a frontend
// reaching each of them checks same-node and cross-node traffic.
func checkSpread(t *testing.T, backends, frontends []corev1.Pod) {
	t.Helper()
	nodes := map[string]bool{}
	for _, b := range backends {
		nodes[b.Spec.NodeName] = true
	}
	if len(nodes) < 2 {
		t.Fatalf("backends are on %d node(s); the tutorial spreads them over both", len(nodes))
	}
	if len(frontends) == 0 {
		t.Fatal("no frontend pods")
	}
}

// TestNetworkPolicy: a NetworkPolicy isolates the backend, drops show in
// `membrane observe` with their reason, an ingress rule lets the frontend
// in (same node and across nodes) and nothing else.
func TestNetworkPolicy(t *testing.T) {
	k := cluster(t)
	const ns = "netpol"
	backends, frontends := deployTutorial(t, k, ns)
	checkSpread(t, backends, frontends)
	other := otherPod(t, k, ns, "other", "other")
	urls := backendURLs(backends)
	fronts := podNames(frontends)
	expectReach(t, k, ns, fronts, urls, true)

	isolateBackends(k, ns)
	expectReach(t, k, ns, fronts, urls, false)
	line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--namespace", ns, "--to-label", "app=backend"},
		ns+"/frontend-", ns+"/backend-", ":8080", "Policy denied DROPPED", "SYN")
	t.Logf("drop: %s", line)

	k.must(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{protocol: TCP, port: http}]
`, "apply", "-f", "-")
	expectReach(t, k, ns, fronts, urls, true)
	expectReach(t, k, ns, []string{other.Name}, urls[1:], false)
	line = expectFlow(t, k, []string{"--verdict", "FORWARDED", "--from-pod", ns + "/frontend", "--to-pod", ns + "/backend", "--port", "8080"},
		"FORWARDED", "to-endpoint")
	t.Logf("forwarded: %s", line)
	expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/other", "--type", "drop"}, ns+"/other", "Policy denied")

	// The CLI shows the enforcement: the backends enforce ingress with the
	// policy's rule, the frontends enforce nothing.
	var lists []agentapi.EndpointList
	mustJSON(t, k.membrane("endpoint", "list", "-o", "json"), &lists)
	seen := 0
	for _, l := range lists {
		for _, e := range l.Endpoints {
			if e.Namespace != ns {
				continue
			}
			seen++
			isBackend := strings.HasPrefix(e.Pod, "backend-")
			if e.State != agentapi.StateReady || e.EnforceIngress != isBackend || e.EnforceEgress || e.Identity < 256 {
				t.Errorf("endpoint %s on %s: %+v", e.Pod, l.Node, e)
			}
		}
	}
	if seen != 5 {
		t.Errorf("endpoint list shows %d endpoints of %s, want 5", seen, ns)
	}
	got := k.membrane("policy", "get", "-n", ns, backends[0].Name)
	if !strings.Contains(got, "NetworkPolicy "+ns+"/backend") || !strings.Contains(got, "Ingress enforcement: Enabled") {
		t.Errorf("policy get shows no rule from the policy:\n%s", got)
	}
	// policy trace: the frontend is let in by the policy's rule, on its
	// port only (also given by its address); the other pod is not, nor
	// is a host outside the cluster (world, no policy of its own); the
	// backend may reach that host (no egress policy).
	world, ok := shared.cluster.Layout().WorldHost("api")
	if !ok {
		t.Fatal("no world host api")
	}
	backend := backends[1].Name
	for _, c := range []struct {
		from, to, port string
		want           []string
	}{
		{frontends[0].Name, backend, "8080", []string{": ALLOWED", "egress of ", "policy not enforced", "8080: allowed", "(NetworkPolicy " + ns + "/backend"}},
		{frontends[0].Status.PodIP, backend, "8080", []string{ns + "/" + frontends[0].Name + " (identity", ": ALLOWED", "8080: allowed"}},
		{frontends[0].Name, backend, "9090/TCP", []string{": DENIED", "9090: Policy denied"}},
		{other.Name, backend, "8080", []string{": DENIED", "8080: Policy denied"}},
		{world.IP.String(), backend, "8080", []string{world.IP.String() + " (reserved:world in the ipcache of ", ": DENIED", policy.ReasonNotEndpoint, "from reserved:world TCP/8080: Policy denied"}},
		{backend, world.IP.String(), "80", []string{": ALLOWED", "egress of ", "to reserved:world TCP/80: policy not enforced", "ingress from", policy.ReasonNotEndpoint}},
	} {
		got := k.membrane("policy", "trace", "-n", ns, c.from, c.to, "--port", c.port)
		t.Logf("membrane policy trace -n %s %s %s --port %s:\n%s", ns, c.from, c.to, c.port, got)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("policy trace %s -> %s --port %s: no %q in\n%s", c.from, c.to, c.port, w, got)
			}
		}
	}
}

// TestMembraneNetworkPolicy: the same with a MembraneNetworkPolicy;
// ingressDeny beats an allow; invalid policies are rejected or marked
// Valid=False while the last valid one stays enforced.
func TestMembraneNetworkPolicy(t *testing.T) {
	k := cluster(t)
	const ns = "mnp"
	backends, frontends := deployTutorial(t, k, ns)
	checkSpread(t, backends, frontends)
	other := otherPod(t, k, ns, "other", "other")
	urls := backendURLs(backends)
	fronts := podNames(frontends)

	policy := func(extra string) string {
		return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: backend, namespace: ` + ns + `}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
` + extra
	}
	k.must(policy(""), "apply", "-f", "-")
	expectReach(t, k, ns, fronts, urls, true)
	expectReach(t, k, ns, []string{other.Name}, urls[1:], false)
	expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/other"}, "Policy denied DROPPED")
	waitValid(t, k, ns, "backend", "True", "")

	t.Run("ingressDeny beats allow", func(t *testing.T) {
		k.must(policy(`  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`), "apply", "-f", "-")
		expectReach(t, k, ns, fronts, urls[1:], false)
		expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/frontend"}, "Policy denied by denylist DROPPED")
		k.must(policy(""), "apply", "-f", "-")
		expectReach(t, k, ns, fronts, urls, true)
	})

	t.Run("invalid input keeps the last valid policy", func(t *testing.T) {
		// Rejected by the CRD's schema, with the field at fault.
		for _, bad := range []struct{ manifest, field string }{
			{strings.Replace(policy(""), `port: "8080"`, `port: "70000"`, 1), "spec.ingress[0].toPorts[0].ports[0].port"},
			{strings.Replace(policy(""), `fromEndpoints: [{matchLabels: {app: frontend}}]`, `fromEntities: [moon]`, 1), "spec.ingress[0].fromEntities[0]"},
			{policy(`  - fromCIDR: ["10.0.0.0/33"]
`), "spec.ingress[1].fromCIDR[0]"},
		} {
			_, err := k.run(t.Context(), bad.manifest, "apply", "-f", "-")
			if err == nil || !strings.Contains(err.Error(), bad.field) {
				t.Errorf("apply with a bad %s: want a rejection naming the field, got %v", bad.field, err)
			}
		}
		// Accepted by the schema, refused by the converter: Valid=False
		// with the field, and the last valid version stays in force.
		k.must(policy(`  - fromEndpoints: [{matchExpressions: [{key: app, operator: Near, values: [other]}]}]
`), "apply", "-f", "-")
		waitValid(t, k, ns, "backend", "False", "spec.ingress[1].fromEndpoints[0].matchExpressions[0].operator")
		time.Sleep(time.Second) // room for a wrong enforcement to show
		expectReach(t, k, ns, fronts, urls, true)
		expectReach(t, k, ns, []string{other.Name}, urls[1:], false)
		k.must(policy(""), "apply", "-f", "-")
		waitValid(t, k, ns, "backend", "True", "")
	})
}

// waitValid waits for the policy's Valid condition.
func waitValid(t *testing.T, k *kube, ns, name, status, inMessage string) {
	t.Helper()
	eventually(t, policyTimeout, "MembraneNetworkPolicy "+name+" Valid="+status, func() error {
		var p v1alpha1.MembraneNetworkPolicy
		if err := json.Unmarshal([]byte(k.must("", "-n", ns, "get", "membranenetworkpolicy", name, "-o", "json")), &p); err != nil {
			return err
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionValid)
		switch {
		case c == nil:
			return fmt.Errorf("no Valid condition")
		case c.ObservedGeneration != p.Generation:
			return fmt.Errorf("condition is of generation %d, policy is at %d", c.ObservedGeneration, p.Generation)
		case string(c.Status) != status || !strings.Contains(c.Message, inMessage):
			return fmt.Errorf("Valid=%s: %s", c.Status, c.Message)
		}
		t.Logf("Valid=%s: %s", c.Status, c.Message)
		return nil
	})
}

// TestClusterwideDefaultDeny: a clusterwide default-deny in both directions
// plus an allow to cluster DNS: names still resolve, everything else is
// dropped and visible.
func TestClusterwideDefaultDeny(t *testing.T) {
	k := cluster(t)
	const ns = "cwdeny"
	backends, frontends := deployTutorial(t, k, ns)
	urls := backendURLs(backends)
	fronts := podNames(frontends)
	expectReach(t, k, ns, fronts[:1], urls, true)

	k.must(`apiVersion: membrane.io/v1alpha1
kind: MembraneClusterwideNetworkPolicy
metadata: {name: e2e-default-deny}
spec:
  description: every endpoint is isolated both ways, except DNS lookups
  endpointSelector: {}
  ingress: [{}]
  egress:
  - toEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}
    toPorts: [{ports: [{port: "53", protocol: ANY}]}]
---
apiVersion: membrane.io/v1alpha1
kind: MembraneClusterwideNetworkPolicy
metadata: {name: e2e-kube-dns}
spec:
  description: cluster DNS answers the cluster and talks to the API server
  endpointSelector:
    matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}
  ingress:
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "53", protocol: ANY}]}]
  egress:
  - toEntities: [kube-apiserver]
`, "apply", "-f", "-")
	t.Cleanup(func() {
		k.must("", "delete", "membraneclusterwidenetworkpolicy", "e2e-default-deny", "e2e-kube-dns", "--ignore-not-found")
		// Later tests start from an open cluster.
		eventually(t, policyTimeout, "default deny lifted", func() error { return fetch(k, ns, fronts[0], urls[1]) })
	})

	expectReach(t, k, ns, fronts[:1], urls, false)
	eventually(t, policyTimeout, "DNS still resolves", func() error {
		out, err := k.run(t.Context(), "", "-n", ns, "exec", fronts[0], "--", "nslookup", "backend."+ns+".svc.cluster.local")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Address") {
			return fmt.Errorf("no address in %q", out)
		}
		return nil
	})
	expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/" + fronts[0], "--port", "8080"}, "Policy denied DROPPED")
	expectFlow(t, k, []string{"--verdict", "FORWARDED", "--from-pod", ns + "/" + fronts[0], "--to-label", "k8s-app=kube-dns", "--protocol", "udp"}, ":53", "FORWARDED")
}

// TestEstablishedConnectionSurvives: an allowed connection keeps going
// through an agent restart on every node and an unrelated policy change;
// the policy stays enforced for new connections meanwhile.
func TestEstablishedConnectionSurvives(t *testing.T) {
	k := cluster(t)
	const ns = "established"
	_, frontends := deployTutorial(t, k, ns)
	k.must("", "-n", ns, "run", "server", "--image=busybox:1.36", "--restart=Never", "--labels=app=server",
		"--", "sh", "-c", "sleep 3600 | nc -l -p 9000; echo server-done; sleep 3600") // stdin open: no half-close
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/server", "--timeout=60s")
	var server corev1.Pod
	mustJSON(t, k.must("", "-n", ns, "get", "pod", "server", "-o", "json"), &server)
	other := otherPod(t, k, ns, "other", "other")
	k.must(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{protocol: TCP, port: 9000}]
`, "apply", "-f", "-")
	probe := func(pod string) error {
		_, err := k.run(t.Context(), "", "-n", ns, "exec", pod, "--", "sh", "-c", "echo probe | timeout 3 nc -w 2 "+server.Status.PodIP+" 9001")
		return err
	}
	// Port 9001 is not allowed for anyone: the policy is in force.
	eventually(t, policyTimeout, "policy enforced on the server", func() error {
		if err := probe(other.Name); err == nil {
			return fmt.Errorf("connected")
		}
		c := k.membrane("observe", "--last", "200", "--verdict", "DROPPED", "--from-pod", ns+"/other", "--port", "9001")
		if !strings.Contains(c, "Policy denied") {
			return fmt.Errorf("no drop seen yet")
		}
		return nil
	})

	const lines = 200 // one every 100 ms: 20 s
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := k.run(ctx, "", "-n", ns, "exec", frontends[0].Name, "--", "sh", "-c",
			fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); sleep 0.1; done | timeout 40 nc %s 9000", lines, server.Status.PodIP))
		done <- err
	}()
	time.Sleep(2 * time.Second)
	restartAgents(t, k)
	k.must(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: unrelated, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
`, "apply", "-f", "-")
	if err := probe(other.Name); err == nil {
		t.Error("a new connection to a port no rule allows got through after the restart")
	}
	err := <-done
	logs := k.must("", "-n", ns, "logs", "server")
	if !strings.Contains(logs, fmt.Sprintf("line %d\n", lines-1)) {
		t.Fatalf("the connection broke (client: %v); the server got:\n%s", err, tail(logs, 5))
	}
	for i := range lines {
		if !strings.Contains(logs, fmt.Sprintf("line %d\n", i)) {
			t.Fatalf("line %d missing on the server", i)
		}
	}
	t.Logf("all %d lines arrived over one connection through 2 agent restarts and a policy change", lines)
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// isolateBackends applies a NetworkPolicy that selects the app=backend pods
// of ns for ingress and allows nothing.
func isolateBackends(k *kube, ns string) {
	k.must(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
`, "apply", "-f", "-")
}

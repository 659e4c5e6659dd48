package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/encryption/spiffe"
)

// mtlsPolicy allows the frontends into the backends' port 8080, with
// mutual authentication when auth is true.
func mtlsPolicy(ns string, auth bool) string {
	a := ""
	if auth {
		a = "\n    authentication: {mode: required}"
	}
	return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: backend, namespace: ` + ns + `}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]` + a + `
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`
}

// deployTutorialAccounts is the tutorial pair with a service account each
// (frontend, backend): two SPIFFE IDs.
func deployTutorialAccounts(t *testing.T, k *kube, ns string) (backends, frontends []corev1.Pod) {
	t.Helper()
	raw, err := os.ReadFile("testdata/tutorial.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.NewReplacer(
		"namespace: tutorial", "namespace: "+ns, "name: tutorial", "name: "+ns,
		"      containers:\n      - name: http-echo", "      serviceAccountName: backend\n      containers:\n      - name: http-echo",
		"      terminationGracePeriodSeconds: 2\n", "      serviceAccountName: frontend\n      terminationGracePeriodSeconds: 2\n",
	).Replace(string(raw))
	if !strings.Contains(manifest, "serviceAccountName: backend") || !strings.Contains(manifest, "serviceAccountName: frontend") {
		t.Fatal("the tutorial manifest changed: no place for the service accounts")
	}
	k.must(`apiVersion: v1
kind: Namespace
metadata: {name: `+ns+`}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: `+ns+`}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: backend, namespace: `+ns+`}
`, "apply", "-f", "-")
	k.must(manifest, "apply", "-f", "-")
	t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--wait=false") })
	k.must("", "-n", ns, "rollout", "status", "deployment/backend", "--timeout=90s")
	k.must("", "-n", ns, "rollout", "status", "deployment/frontend", "--timeout=90s")
	return k.pods(ns, "app=backend"), k.pods(ns, "app=frontend")
}

// onNode returns the pod of ps on node, or the one on another node.
func onNode(t *testing.T, ps []corev1.Pod, node string, same bool) corev1.Pod {
	t.Helper()
	for _, p := range ps {
		if (p.Spec.NodeName == node) == same {
			return p
		}
	}
	t.Fatalf("no pod %s node %s among %v", map[bool]string{true: "on", false: "off"}[same], node, podNames(ps))
	return corev1.Pod{}
}

// TestMutualAuth: with authentication.mutual.enabled, a rule requiring
// authentication sends the frontend's connections to the backend through
// the node Envoys in mutual TLS 1.3 with both workloads' SVIDs: the answer
// comes (across nodes and on one node), the underlay carries TLS to the
// tunnel port and never the plaintext answer (which it does carry once the
// rule no longer requires authentication), and the backend sees the
// frontend's pod address. The node itself and a pod the rule does not
// allow are refused, with the reason in flows.
func TestMutualAuth(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	name := "e2e-mtls-" + strconv.Itoa(os.Getpid())
	s := ownCluster(t, localcluster.Options{
		Name: name, Nodes: 2, PodCIDR: "10.242.0.0/16", ServiceCIDR: "10.92.0.0/16",
		// Short-lived SVIDs (renewed every 30 s) and a CA that can rotate
		// within the test.
		HelmSet: []string{"authentication.mutual.enabled=true", "authentication.mutual.svidTTL=1m",
			"authentication.mutual.ca.ttl=10m", "authentication.mutual.ca.propagation=5s"},
	})
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	t.Cleanup(func() {
		if t.Failed() {
			dumpMTLS(t, k, s)
		}
	})
	const ns = "mtls"
	backends, frontends := deployTutorialAccounts(t, k, ns)
	checkSpread(t, backends, frontends)
	other := otherPod(t, k, ns, "other", "other")
	// The backend on the second node, reached from the first node's frontend
	// (cross-node) and from the second node's (same node).
	nodeB := s.Nodes[1].Name
	backend := onNode(t, backends, nodeB, true)
	remoteFront := onNode(t, frontends, nodeB, false)
	localFront := onNode(t, frontends, nodeB, true)
	url := "http://" + backend.Status.PodIP + ":8080/"

	k.must(mtlsPolicy(ns, true), "apply", "-f", "-")
	waitCondition(t, k, ns, "backend", "Valid", "True", "")
	// The SVIDs are issued and pushed to Envoy once the policy needs them.
	eventually(t, 90*time.Second, "the frontends reach the backend through mutual TLS", func() error {
		for _, f := range []corev1.Pod{remoteFront, localFront} {
			if err := fetch(k, ns, f.Name, url); err != nil {
				return fmt.Errorf("%s: %w", f.Name, err)
			}
		}
		return nil
	})

	t.Run("underlay carries TLS 1.3 only", func(t *testing.T) {
		pcap, summary := captureUnderlay(t, s, nodeB, func() {
			for range 5 {
				if err := fetch(k, ns, remoteFront.Name, url); err != nil {
					t.Errorf("fetch during the capture: %v", err)
				}
			}
		})
		tunnel := countIn(t, pcap, "tcp port 15008")
		plain := bytes.Count(pcap, []byte("Hello from Backend"))
		direct := countIn(t, pcap, "tcp port 8080")
		// A TLS 1.3 ServerHello: extension supported_versions (0x002b),
		// length 2, TLS 1.3 (0x0304).
		tls13 := bytes.Count(pcap, []byte{0x00, 0x2b, 0x00, 0x02, 0x03, 0x04})
		t.Logf("underlay of %s: %d packets to or from the tunnel port, %d on port 8080, %d TLS 1.3 ServerHello, plaintext answer %d times",
			nodeB, tunnel, direct, tls13, plain)
		if tunnel == 0 || tls13 == 0 {
			t.Errorf("no TLS 1.3 on the tunnel port in the capture:\n%s", head(summary, 40))
		}
		if plain != 0 || direct != 0 {
			t.Errorf("plaintext on the underlay: answer %d times, %d packets on port 8080", plain, direct)
		}
	})

	t.Run("observe shows both SPIFFE IDs", func(t *testing.T) {
		line := expectFlow(t, k, []string{"--to-pod", ns + "/" + backend.Name, "--port", "8080", "--type", "l7"},
			ns+"/"+remoteFront.Name, "mTLS spiffe://cluster.local/ns/"+ns+"/sa/frontend -> spiffe://cluster.local/ns/"+ns+"/sa/backend 200")
		t.Logf("authenticated flow: %s", line)
	})

	t.Run("backend sees the frontend's address", func(t *testing.T) {
		logs := k.must("", "-n", ns, "logs", backend.Name)
		if !strings.Contains(logs, " "+remoteFront.Status.PodIP+":") || !strings.Contains(logs, " "+localFront.Status.PodIP+":") {
			t.Errorf("backend log lacks the frontends' addresses %s and %s:\n%s", remoteFront.Status.PodIP, localFront.Status.PodIP, tail(logs, 20))
		}
	})

	t.Run("bypass refused", func(t *testing.T) {
		// The backend's node itself: no workload identity, no way in.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+s.Layout().NodeNetns(nodeB), "--",
			"curl", "-s", "-m", "3", url).CombinedOutput()
		if err == nil || strings.Contains(string(out), "Hello from Backend") {
			t.Errorf("the node reached the backend without authentication: %v %s", err, out)
		}
		line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--to-pod", ns + "/" + backend.Name, "--port", "8080"},
			nodeB+":", "(host) -> "+ns+"/"+backend.Name+":8080", "Authentication required DROPPED")
		t.Logf("node: %s", line)
		// A pod the rule does not allow.
		if err := fetch(k, ns, other.Name, url); err == nil {
			t.Error("a pod the rule does not allow reached the backend")
		}
		line = expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/other", "--port", "8080"}, ns+"/other", "DROPPED")
		t.Logf("other pod: %s", line)
		// The tunnel port wants a client certificate of the trust domain.
		ctx2, cancel2 := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel2()
		got, _ := k.run(ctx2, "", "-n", ns, "exec", other.Name, "--", "timeout", "3", "wget", "-qO-", "--no-check-certificate",
			"https://"+s.Nodes[1].IP+":15008/")
		if strings.Contains(got, "Hello") {
			t.Errorf("the tunnel port answered without a client certificate: %q", got)
		}
	})

	t.Run("SVID and CA rotation under a request loop", func(t *testing.T) {
		certs := func() string {
			out, err := exec.Command("nsenter", "--net="+s.Layout().NodeNetns(nodeB), "--",
				"curl", "-s", "-m", "5", "http://127.0.0.1:9901/certs").CombinedOutput()
			if err != nil {
				t.Fatalf("envoy /certs: %v %s", err, out)
			}
			return serials(string(out))
		}
		before := certs()
		const seconds = 100
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), (seconds+60)*time.Second)
			defer cancel()
			// One new connection every 200 ms, each bounded by 3 s.
			script := fmt.Sprintf(`ok=0; failed=0; end=$(( $(date +%%s) + %d )); n=0
while [ $(date +%%s) -lt $end ] && [ $n -lt 2000 ]; do n=$((n+1))
  if timeout 3 wget -qO- %s 2>/dev/null | grep -q "Hello from Backend"; then ok=$((ok+1)); else failed=$((failed+1)); fi
  sleep 0.2
done; echo ok=$ok failed=$failed`, seconds, url)
			out, err := k.run(ctx, "", "-n", ns, "exec", remoteFront.Name, "--", "sh", "-c", script)
			done <- result{out, err}
		}()
		time.Sleep(20 * time.Second)
		k.must("", "-n", "kube-system", "annotate", "secret", "membrane-spiffe-ca", "--overwrite",
			spiffe.AnnotationRotate+"="+strconv.FormatInt(time.Now().UnixNano(), 10))
		r := <-done
		var ok, failed int
		if _, err := fmt.Sscanf(strings.TrimSpace(r.out), "ok=%d failed=%d", &ok, &failed); r.err != nil || err != nil {
			t.Fatalf("request loop: %v %v: %s", r.err, err, r.out)
		}
		after := certs()
		t.Logf("request loop over %d s with SVIDs renewed every 30 s and a CA rotation: %d ok, %d failed (target 0); Envoy certificate serials before %q, after %q",
			seconds, ok, failed, before, after)
		if before == after {
			t.Errorf("the node Envoy's certificates did not change: %q", after)
		}
		if failed != 0 || ok == 0 {
			t.Errorf("%d of %d requests failed during rotation", failed, ok+failed)
		}
	})

	t.Run("without authentication the capture sees plaintext", func(t *testing.T) {
		k.must(mtlsPolicy(ns, false), "apply", "-f", "-")
		eventually(t, 60*time.Second, "the plaintext answer on the underlay", func() error {
			pcap, _ := captureUnderlay(t, s, nodeB, func() {
				_ = fetch(k, ns, remoteFront.Name, url)
			})
			if n := bytes.Count(pcap, []byte("Hello from Backend")); n == 0 {
				return fmt.Errorf("no plaintext answer in %d bytes of capture", len(pcap))
			}
			return nil
		})
	})
}

// countIn counts the packets of a capture matching a tcpdump filter.
func countIn(t *testing.T, pcap []byte, filter string) int {
	t.Helper()
	file := filepath.Join(t.TempDir(), "count.pcap")
	if err := os.WriteFile(file, pcap, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tcpdump", "-nn", "-r", file, filter).Output()
	if err != nil {
		t.Fatalf("tcpdump -r %s: %v", filter, err)
	}
	return strings.Count(string(out), "\n")
}

func head(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// dumpMTLS logs what explains a failed authenticated path: the agents' and
// Envoys' logs, and each Envoy's TLS and RBAC statistics and secrets (Envoy
// redacts keys).
func dumpMTLS(t *testing.T, k *kube, s *localcluster.State) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, sel := range []string{"k8s-app=membrane-agent", "k8s-app=membrane-envoy"} {
		out, _ := k.run(ctx, "", "-n", "kube-system", "logs", "-l", sel, "--tail", "40", "--prefix")
		t.Logf("logs %s:\n%s", sel, out)
	}
	for _, n := range s.Nodes {
		for _, path := range []string{"/stats?filter=ssl|rbac|mtls|tunnel", "/config_dump?resource=dynamic_active_secrets", "/listeners", "/clusters?format=text"} {
			out, _ := exec.CommandContext(ctx, "nsenter", "--net="+s.Layout().NodeNetns(n.Name), "--",
				"curl", "-s", "-m", "5", "http://127.0.0.1:9901"+path).CombinedOutput()
			t.Logf("envoy %s %s:\n%s", n.Name, path, head(string(out), 80))
		}
	}
}

// serials are the certificate serial numbers in Envoy's /certs output,
// sorted and joined.
func serials(certs string) string {
	var out []string
	for _, l := range strings.Split(certs, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, `"serial_number": "`); ok {
			out = append(out, strings.TrimSuffix(strings.TrimSuffix(v, ","), `"`))
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// TestMutualAuthWireGuard: the same rule on a cluster whose pod traffic
// between nodes is WireGuard-encrypted: the authenticated path works across
// nodes and on one node (the tunnel between the node Envoys is node
// traffic, outside the pod-only WireGuard), and the underlay never carries
// the plaintext answer.
func TestMutualAuthWireGuard(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-mtlswg-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.240.0.0/16", ServiceCIDR: "10.90.0.0/16",
		Encryption: localcluster.EncryptionWireGuard,
		HelmSet:    []string{"authentication.mutual.enabled=true"},
	})
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	t.Cleanup(func() {
		if t.Failed() {
			dumpMTLS(t, k, s)
		}
	})
	const ns = "mtlswg"
	backends, frontends := deployTutorialAccounts(t, k, ns)
	checkSpread(t, backends, frontends)
	nodeB := s.Nodes[1].Name
	backend := onNode(t, backends, nodeB, true)
	remoteFront := onNode(t, frontends, nodeB, false)
	localFront := onNode(t, frontends, nodeB, true)
	url := "http://" + backend.Status.PodIP + ":8080/"
	k.must(mtlsPolicy(ns, true), "apply", "-f", "-")
	eventually(t, 90*time.Second, "the frontends reach the backend through mutual TLS", func() error {
		for _, f := range []corev1.Pod{remoteFront, localFront} {
			if err := fetch(k, ns, f.Name, url); err != nil {
				return fmt.Errorf("%s: %w", f.Name, err)
			}
		}
		return nil
	})
	pcap, summary := captureUnderlay(t, s, nodeB, func() {
		for range 5 {
			if err := fetch(k, ns, remoteFront.Name, url); err != nil {
				t.Errorf("fetch during the capture: %v", err)
			}
		}
	})
	tunnel, wg := countIn(t, pcap, "tcp port 15008"), countIn(t, pcap, "udp port 51871")
	plain := bytes.Count(pcap, []byte("Hello from Backend"))
	t.Logf("underlay of %s with WireGuard: %d packets on the tunnel port, %d WireGuard packets, plaintext answer %d times", nodeB, tunnel, wg, plain)
	if plain != 0 {
		t.Errorf("plaintext answer on the underlay %d times:\n%s", plain, head(summary, 40))
	}
	if tunnel == 0 && wg == 0 {
		t.Errorf("the capture saw neither the tunnel nor WireGuard:\n%s", head(summary, 40))
	}
	line := expectFlow(t, k, []string{"--to-pod", ns + "/" + backend.Name, "--port", "8080", "--type", "l7"},
		"mTLS spiffe://cluster.local/ns/"+ns+"/sa/frontend -> spiffe://cluster.local/ns/"+ns+"/sa/backend 200")
	t.Logf("authenticated flow: %s", line)
}

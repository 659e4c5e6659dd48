package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// mtlsL7Policy allows the frontends into the backends' port 8080 with
// mutual authentication, GET /public/... only.
func mtlsL7Policy(ns string) string {
	return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: backend, namespace: ` + ns + `}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    authentication: {mode: required}
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/public/.*"}]
`
}

var wgetStatus = regexp.MustCompile(`HTTP/1\.[01] ([0-9]{3})`)

// wgetCode makes one GET from a busybox pod and returns the status code, or
// "000" when no HTTP response came back.
func wgetCode(k *kube, ns, pod, url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := k.run(ctx, "", "-n", ns, "exec", pod, "--", "sh", "-c", "timeout 3 wget -S -O /dev/null "+url+" 2>&1")
	if m := wgetStatus.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return "000"
}

// TestMutualAuthL7: a rule requiring authentication with HTTP rules on its
// port: the frontends' requests (across nodes and on one node) travel in
// the mutual-TLS tunnel and the backend node's Envoy applies the HTTP
// rules inside it (one proxy per node): the allowed path gets 200, another
// 403. The underlay carries neither the requests nor the answers in
// plaintext; observe shows each request with both SPIFFE IDs; the policy
// is programmed (not reported unsupported); the node and a pod the rule
// does not allow are refused.
func TestMutualAuthL7(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	const ns = "mtlsl7"
	c := newMTLSCluster(t, localcluster.Options{
		Name: "e2e-mtlsl7-", Nodes: 2, PodCIDR: "10.236.0.0/16", ServiceCIDR: "10.86.0.0/16",
		HelmSet: []string{"authentication.mutual.enabled=true"},
	}, ns, nil)
	s, k, nodeB, backend, remoteFront, localFront := c.s, c.k, c.nodeB, c.backend, c.remoteFront, c.localFront
	other := otherPod(t, k, ns, "other", "other")
	base := "http://" + backend.Status.PodIP + ":8080"
	allowed, denied := base+"/public/hello", base+"/admin"

	k.must(mtlsL7Policy(ns), "apply", "-f", "-")
	waitCondition(t, k, ns, "backend", "Valid", "True", "")
	eventually(t, 90*time.Second, "GET /public/hello is 200 and GET /admin 403 through mutual TLS", func() error {
		for _, f := range []corev1.Pod{remoteFront, localFront} {
			if got := wgetCode(k, ns, f.Name, allowed); got != "200" {
				return fmt.Errorf("%s: %s: %s", f.Name, allowed, got)
			}
			if got := wgetCode(k, ns, f.Name, denied); got != "403" {
				return fmt.Errorf("%s: %s: %s", f.Name, denied, got)
			}
		}
		return nil
	})
	if err := fetch(k, ns, remoteFront.Name, allowed); err != nil {
		t.Errorf("the allowed request's answer: %v", err)
	}
	// Authentication and L7 rules together are programmed, not reported.
	waitCondition(t, k, ns, "backend", "Programmed", "True", "")

	t.Run("underlay carries TLS 1.3 only", func(t *testing.T) {
		pcap, summary := captureUnderlay(t, s, nodeB, func() {
			for range 5 {
				if got := wgetCode(k, ns, remoteFront.Name, allowed); got != "200" {
					t.Errorf("allowed request during the capture: %s", got)
				}
				if got := wgetCode(k, ns, remoteFront.Name, denied); got != "403" {
					t.Errorf("denied request during the capture: %s", got)
				}
			}
		})
		tunnel := countIn(t, pcap, "tcp port 15008")
		direct := countIn(t, pcap, "tcp port 8080")
		// The tunnel's HTTP/2 connection outlives a request: count TLS
		// application data records (type 0x17, legacy version 0x0303, as
		// TLS 1.3 writes every record), and read the version of the
		// handshakes from the receiving Envoy.
		records := bytes.Count(pcap, []byte{0x17, 0x03, 0x03})
		plain := map[string]int{}
		for _, s := range []string{"Hello from Backend", "/public/hello", "/admin", "RBAC: access denied"} {
			plain[s] = bytes.Count(pcap, []byte(s))
		}
		versions := envoyAdmin(t, s.Layout().NodeNetns(nodeB), "/stats?filter=^listener.0.0.0.0_15008.ssl.versions")
		t.Logf("underlay of %s: %d packets to or from the tunnel port, %d TLS records, %d packets on port 8080, plaintext %v; tunnel handshakes by version:\n%s",
			nodeB, tunnel, records, direct, plain, versions)
		if tunnel == 0 || records == 0 {
			t.Errorf("no TLS on the tunnel port in the capture:\n%s", head(summary, 40))
		}
		if !regexp.MustCompile(`TLSv1\.3: [1-9]`).MatchString(versions) || regexp.MustCompile(`TLSv1(\.[012])?: [1-9]`).MatchString(versions) {
			t.Errorf("the tunnel's handshakes are not all TLS 1.3:\n%s", versions)
		}
		for s, n := range plain {
			if n != 0 {
				t.Errorf("plaintext %q on the underlay %d times", s, n)
			}
		}
		if direct != 0 {
			t.Errorf("%d packets on port 8080 on the underlay", direct)
		}
	})

	t.Run("observe shows the requests with both SPIFFE IDs", func(t *testing.T) {
		ids := mtlsFlowIDs(ns)
		args := []string{"--to-pod", ns + "/" + backend.Name, "--port", "8080", "--type", "l7"}
		line := expectFlow(t, k, args, ns+"/"+remoteFront.Name, ids+" HTTP/1.1 200", "GET http://"+backend.Status.PodIP+":8080/public/hello", "FORWARDED")
		t.Logf("allowed request: %s", line)
		line = expectFlow(t, k, args, ns+"/"+remoteFront.Name, ids+" HTTP/1.1 403", "GET http://"+backend.Status.PodIP+":8080/admin", "DROPPED")
		t.Logf("denied request: %s", line)
		line = expectFlow(t, k, args, ns+"/"+remoteFront.Name, ids+" 200")
		t.Logf("its tunnel: %s", line)
	})

	t.Run("backend sees the frontend's address", func(t *testing.T) {
		checkFrontendAddresses(t, k, ns, backend, remoteFront, localFront)
	})

	t.Run("a rule change reaches an open connection", func(t *testing.T) {
		// The rules are a route configuration: no filter chain changes,
		// the connection stays and its next request meets the new rule.
		frontNS := filepath.Join(s.Layout().RunDir(), "netns", remoteFront.Spec.NodeName, string(remoteFront.UID))
		c, err := dialKept(frontNS, net.JoinHostPort(backend.Status.PodIP, "8080"))
		if err != nil {
			t.Fatalf("connect from %s: %v", remoteFront.Name, err)
		}
		defer c.c.Close()
		code := func(path string) (int, error) {
			resp, err := c.get(path)
			if err != nil {
				return 0, err
			}
			return resp.StatusCode, nil
		}
		if got, err := code("/public/hello"); err != nil || got != 200 {
			t.Fatalf("GET /public/hello before the change: %d, %v", got, err)
		}
		modified := func() int { return envoyStat(t, s.Layout().NodeNetns(nodeB), "listener_manager.listener_modified") }
		before := modified()
		k.must(strings.Replace(mtlsL7Policy(ns), `path: "/public/.*"`, `path: "/private/.*"`, 1), "apply", "-f", "-")
		defer k.must(mtlsL7Policy(ns), "apply", "-f", "-")
		eventually(t, 60*time.Second, "GET /public/hello on the open connection is 403", func() error {
			got, err := code("/public/hello")
			if err != nil {
				t.Fatalf("the open connection: %v", err)
			}
			if got != 403 {
				return fmt.Errorf("got %d", got)
			}
			return nil
		})
		if got, err := code("/private/x"); err != nil || got != 200 {
			t.Errorf("GET /private/x on the open connection after the change: %d, %v", got, err)
		}
		if after := modified(); after != before {
			t.Errorf("the backend node's Envoy modified %d listeners for a rule change, want none", after-before)
		}
	})

	t.Run("bypass refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+s.Layout().NodeNetns(nodeB), "--",
			"curl", "-s", "-m", "3", allowed).CombinedOutput()
		if err == nil || bytes.Contains(out, []byte("Hello from Backend")) {
			t.Errorf("the node reached the backend without authentication: %v %s", err, out)
		}
		line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--to-pod", ns + "/" + backend.Name, "--port", "8080"},
			nodeB+":", "(host) -> "+ns+"/"+backend.Name+":8080", "Authentication required DROPPED")
		t.Logf("node: %s", line)
		if got := wgetCode(k, ns, other.Name, allowed); got != "000" {
			t.Errorf("a pod the rule does not allow got an answer: %s", got)
		}
	})

	t.Run("a rule allowing the host opens the port to the node", func(t *testing.T) {
		// As kubelet probes need: fromEntities host, without authentication.
		k.must(mtlsL7Policy(ns)+`  - fromEntities: [host]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`, "apply", "-f", "-")
		eventually(t, 60*time.Second, "the node reaches the backend", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "nsenter", "--net="+s.Layout().NodeNetns(nodeB), "--",
				"curl", "-s", "-m", "3", base+"/healthz").CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("Hello from Backend")) {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		})
		// The frontends still take the tunnel, with the HTTP rules.
		if got := wgetCode(k, ns, remoteFront.Name, denied); got != "403" {
			t.Errorf("%s from the frontend: %s, want 403", denied, got)
		}
		if got := wgetCode(k, ns, other.Name, allowed); got != "000" {
			t.Errorf("a pod the rule does not allow got an answer: %s", got)
		}
	})
}

// mtlsEgressPolicy lets the frontends reach the backends' port 8080 only
// with mutual authentication (an egress rule of the frontend; the backend
// has no policy).
func mtlsEgressPolicy(ns string) string {
	return `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: frontend, namespace: ` + ns + `}
spec:
  endpointSelector: {matchLabels: {app: frontend}}
  egress:
  - toEndpoints: [{matchLabels: {app: backend}}]
    authentication: {mode: required}
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`
}

// TestMutualAuthEgress: an egress rule requiring authentication sends the
// frontends' connections (across nodes and on one node) through the
// mutual-TLS tunnel to a backend that has no policy of its own: the answer
// comes, the underlay carries it only inside the tunnel, observe shows both
// SPIFFE IDs, the backend sees the frontend's address, and the policy is
// not reported unsupported.
func TestMutualAuthEgress(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	const ns = "mtlseg"
	c := newMTLSCluster(t, localcluster.Options{
		Name: "e2e-mtlseg-", Nodes: 2, PodCIDR: "10.235.0.0/16", ServiceCIDR: "10.85.0.0/16",
		HelmSet: []string{"authentication.mutual.enabled=true"},
	}, ns, nil)
	s, k, nodeB, backend, remoteFront, localFront := c.s, c.k, c.nodeB, c.backend, c.remoteFront, c.localFront
	url := "http://" + backend.Status.PodIP + ":8080/"

	k.must(mtlsEgressPolicy(ns), "apply", "-f", "-")
	waitCondition(t, k, ns, "frontend", "Valid", "True", "")
	waitFrontendsReach(t, k, ns, url, remoteFront, localFront)
	if out := k.must("", "-n", ns, "get", "mnp", "frontend", "-o", "jsonpath={.status.conditions[?(@.type=='Programmed')]}"); out != "" {
		t.Errorf("the egress rule requiring authentication is reported: %s", out)
	}

	t.Run("underlay carries the answer only in the tunnel", func(t *testing.T) {
		pcap, summary := captureFetches(t, s, k, nodeB, ns, remoteFront.Name, url)
		tunnel, direct := countIn(t, pcap, "tcp port 15008"), countIn(t, pcap, "tcp port 8080")
		records := bytes.Count(pcap, []byte{0x17, 0x03, 0x03})
		plain := bytes.Count(pcap, []byte("Hello from Backend"))
		t.Logf("underlay of %s: %d packets to or from the tunnel port, %d TLS records, %d on port 8080, plaintext answer %d times",
			nodeB, tunnel, records, direct, plain)
		if tunnel == 0 || records == 0 {
			t.Errorf("no TLS on the tunnel port in the capture:\n%s", head(summary, 40))
		}
		checkNoPlaintext(t, plain, direct)
	})

	checkAuthenticatedFlows(t, k, ns, backend, remoteFront, localFront)
}

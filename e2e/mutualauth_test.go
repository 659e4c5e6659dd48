package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/encryption/spiffe"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/xds/mtls"
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

// mtlsCluster is a 2-node cluster of a test's own with mutual
// authentication and the tutorial in one namespace: the backend on the
// second node, reached by a frontend on the other node (cross-node) and
// one on the same node. A failed test dumps the proxies' state.
type mtlsCluster struct {
	s                                *localcluster.State
	k                                *kube
	nodeB                            string
	backend, remoteFront, localFront corev1.Pod
}

// newMTLSCluster brings up opts (Name gets the process ID appended), runs
// ready (may be nil) and deploys the tutorial in ns.
func newMTLSCluster(t *testing.T, opts localcluster.Options, ns string, ready func(*testing.T, *kube)) mtlsCluster {
	t.Helper()
	opts.Name += strconv.Itoa(os.Getpid())
	start := time.Now()
	s := ownCluster(t, opts)
	t.Logf("cluster up in %s", time.Since(start).Round(time.Second))
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	t.Cleanup(func() {
		if t.Failed() {
			dumpMTLS(t, k, s)
		}
	})
	if ready != nil {
		ready(t, k)
	}
	backends, frontends := deployTutorialAccounts(t, k, ns)
	checkSpread(t, backends, frontends)
	c := mtlsCluster{s: s, k: k, nodeB: s.Nodes[1].Name}
	c.backend = onNode(t, backends, c.nodeB, true)
	c.remoteFront = onNode(t, frontends, c.nodeB, false)
	c.localFront = onNode(t, frontends, c.nodeB, true)
	return c
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

// mtlsProvider is an identity provider TestMutualAuth runs with.
type mtlsProvider struct {
	name string
	// opts are the cluster's options but its name.
	opts localcluster.Options
	// ready waits until the provider issues identities.
	ready func(t *testing.T, k *kube)
	// rotateCA rotates the CA (returning when the rotation is complete)
	// while the request loop runs; it returns what it did.
	rotateCA func(t *testing.T, k *kube) string
	// loop is how long the request loop runs (longer than rotateCA).
	loop time.Duration
	// oldCAsStay: after rotateCA the trust bundle still holds the old CAs.
	oldCAsStay bool
	// idleTimeout is the cluster's authentication.mutual.idleTimeout (0:
	// the default, not tested: an hour).
	idleTimeout time.Duration
}

// TestMutualAuth: with authentication.mutual.enabled (the built-in CA), a
// rule requiring authentication sends the frontend's connections to the
// backend through the node Envoys in mutual TLS 1.3 with both workloads'
// SVIDs: the answer comes (across nodes and on one node), the underlay
// carries TLS to the tunnel port and never the plaintext answer (which it
// does carry once the rule no longer requires authentication), and the
// backend sees the frontend's pod address. The node itself, a pod the rule
// does not allow, and a pod with its own valid SVID claiming an allowed
// pod's address are refused, with the reason in flows and metrics; SVID
// renewal and a CA rotation under a request loop fail no request.
func TestMutualAuth(t *testing.T) {
	testMutualAuth(t, mtlsProvider{
		name: "e2e-mtls-",
		opts: localcluster.Options{
			Nodes: 2, PodCIDR: "10.242.0.0/16", ServiceCIDR: "10.92.0.0/16",
			// Short-lived SVIDs (renewed every 30 s) and a CA that can
			// rotate within the test.
			HelmSet: []string{"authentication.mutual.enabled=true", "authentication.mutual.svidTTL=1m",
				"authentication.mutual.ca.ttl=10m", "authentication.mutual.ca.propagation=5s",
				"authentication.mutual.idleTimeout=12s"},
		},
		idleTimeout: 12 * time.Second,
		rotateCA: func(t *testing.T, k *kube) string {
			k.must("", "-n", "kube-system", "annotate", "secret", "membrane-spiffe-ca", "--overwrite",
				spiffe.AnnotationRotate+"="+strconv.FormatInt(time.Now().UnixNano(), 10))
			return "built-in CA rotation requested on the CA Secret"
		},
		loop:       100 * time.Second,
		oldCAsStay: true,
	})
}

// TestMutualAuthSPIRE: TestMutualAuth with --identity-provider spire: the
// SVIDs come from SPIRE (1 min TTL, renewed by the SPIRE agents), and the
// CA rotation is SPIRE's own: a new X.509 authority prepared, activated,
// the old one tainted (the agents renew every SVID it signed) and revoked
// (removed from the bundle), all during the request loop.
func TestMutualAuthSPIRE(t *testing.T) {
	testMutualAuth(t, mtlsProvider{
		name: "e2e-mtlsspr-",
		opts: localcluster.Options{
			Nodes: 2, PodCIDR: "10.251.0.0/16", ServiceCIDR: "10.111.0.0/16",
			IdentityProvider: localcluster.IdentitySPIRE,
			HelmSet:          []string{"authentication.mutual.svidTTL=1m"},
		},
		ready:    spireReady,
		rotateCA: spireRotateCA,
		loop:     150 * time.Second,
	})
}

func testMutualAuth(t *testing.T, p mtlsProvider) {
	cluster(t) // skips like every end-to-end test
	opts := p.opts
	opts.Name = p.name
	const ns = "mtls"
	c := newMTLSCluster(t, opts, ns, p.ready)
	s, k, nodeB, backend, remoteFront, localFront := c.s, c.k, c.nodeB, c.backend, c.remoteFront, c.localFront
	other := otherPod(t, k, ns, "other", "other")
	url := "http://" + backend.Status.PodIP + ":8080/"

	// Two pods on the remote frontend's node that fetch their own SVIDs:
	// one of an account the rule does not allow, one of the frontend's.
	nodeA := remoteFront.Spec.NodeName
	k.must(svidPods(ns, nodeA), "apply", "-f", "-")
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/intruder", "pod/probe", "--timeout=120s")
	intruder, probe := getPod(t, k, ns, "intruder"), getPod(t, k, ns, "probe")
	podNetns := func(p corev1.Pod) string {
		return filepath.Join(s.Layout().RunDir(), "netns", p.Spec.NodeName, string(p.UID))
	}

	k.must(mtlsPolicy(ns, true), "apply", "-f", "-")
	waitCondition(t, k, ns, "backend", "Valid", "True", "")
	// The SVIDs are issued and pushed to Envoy once the policy needs them.
	waitFrontendsReach(t, k, ns, url, remoteFront, localFront)

	t.Run("underlay carries TLS 1.3 only", func(t *testing.T) {
		pcap, summary := captureFetches(t, s, k, nodeB, ns, remoteFront.Name, url)
		tunnel := countIn(t, pcap, "tcp port 15008")
		plain := bytes.Count(pcap, []byte("Hello from Backend"))
		direct := countIn(t, pcap, "tcp port 8080")
		// A TLS 1.3 ServerHello: extension supported_versions (0x002b),
		// length 2, TLS 1.3 (0x0304).
		tls13 := bytes.Count(pcap, []byte{0x00, 0x2b, 0x00, 0x02, 0x03, 0x04})
		t.Logf("underlay of %s: %d packets to or from the tunnel port, %d on port 8080, %d TLS 1.3 ServerHello, plaintext answer %d times",
			nodeB, tunnel, direct, tls13, plain)
		// TLS application data records (type 23, legacy version 0x0303).
		records := bytes.Count(pcap, []byte{0x17, 0x03, 0x03})
		if tls13 == 0 && tunnel > 0 && records > 0 {
			// The tunnel connections were established before the capture
			// (Envoy keeps them): the versions they negotiated are in the
			// source node's Envoy's statistics.
			out := envoyAdmin(t, s.Layout().NodeNetns(nodeA), "/stats?filter=membrane-mtls-tunnel.*ssl%5C.versions")
			v13, other := 0.0, 0.0
			for _, l := range strings.Split(out, "\n") {
				name, v, ok := strings.Cut(l, ": ")
				n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				switch {
				case !ok:
				case strings.HasSuffix(name, "ssl.versions.TLSv1.3"):
					v13 += n
				default:
					other += n
				}
			}
			t.Logf("no handshake in the capture (%d TLS records on the tunnel port); %s's tunnel clusters negotiated TLS 1.3 %v times, another version %v times",
				records, nodeA, v13, other)
			if v13 > 0 && other == 0 {
				tls13 = -1
			}
		}
		if tunnel == 0 || tls13 == 0 {
			t.Errorf("no TLS 1.3 on the tunnel port in the capture:\n%s", head(summary, 40))
		}
		checkNoPlaintext(t, plain, direct)
	})

	checkAuthenticatedFlows(t, k, ns, backend, remoteFront, localFront)

	if p.idleTimeout != 0 { // else the cluster keeps the default idle timeout (1h)
		t.Run("idle connection closed after the idle timeout", func(t *testing.T) {
			checkIdleTimeout(t, s.Layout().NodeNetns(nodeA), podNetns(remoteFront), net.JoinHostPort(backend.Status.PodIP, "8080"), p.idleTimeout)
		})
	}

	t.Run("a new frontend pod changes no listener of the backend's node", func(t *testing.T) {
		// Its address joins the backend's authorization (a route
		// configuration), not a filter chain: Envoy drains no tunnel.
		modified := func() int { return envoyStat(t, s.Layout().NodeNetns(nodeB), "listener_manager.listener_modified") }
		before := modified()
		k.must(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: frontend-extra, namespace: %s, labels: {app: frontend}}
spec:
  nodeName: %s
  serviceAccountName: frontend
  terminationGracePeriodSeconds: 0
  containers:
  - {name: frontend, image: "busybox:1.36", command: [sleep, "3600"]}
`, ns, nodeA), "apply", "-f", "-")
		defer k.must("", "-n", ns, "delete", "pod", "frontend-extra", "--wait=false")
		k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/frontend-extra", "--timeout=90s")
		eventually(t, 90*time.Second, "the new frontend pod reaches the backend", func() error {
			return fetch(k, ns, "frontend-extra", url)
		})
		if after := modified(); after != before {
			t.Errorf("the backend node's Envoy modified %d listeners for a new frontend pod, want none", after-before)
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

	t.Run("own SVID, another pod's address", func(t *testing.T) {
		td := spiffeid.RequireTrustDomainFromString("cluster.local")
		backendID := spiffeid.RequireFromPath(td, "/ns/"+ns+"/sa/backend")
		tunnel := net.JoinHostPort(s.Nodes[1].IP, "15008")
		dest := net.JoinHostPort(backend.Status.PodIP, "8080")
		svidOf := func(p corev1.Pod, want string) *podSVID {
			var got *podSVID
			eventually(t, 60*time.Second, p.Name+" fetches its SVID over the Workload API", func() error {
				out, err := k.run(t.Context(), "", "-n", ns, "exec", p.Name, "--", "membrane", "identity", "fetch", "--timeout=20s", "-o", "pem")
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				got, err = parsePodSVID(td, out)
				return err
			})
			if got.svid.ID.String() != want {
				t.Fatalf("%s got the SVID of %s, want %s", p.Name, got.svid.ID, want)
			}
			return got
		}
		intruderSVID := svidOf(intruder, "spiffe://cluster.local/ns/"+ns+"/sa/intruder")
		probeSVID := svidOf(probe, "spiffe://cluster.local/ns/"+ns+"/sa/frontend")
		// The control: the same client with an allowed identity from its
		// own address gets through (the attack below is the same request).
		eventually(t, 60*time.Second, "the probe pod reaches the backend over its own tunnel", func() error {
			code, body, err := connectTunnel(t.Context(), podNetns(probe), tunnel, probeSVID, backendID, dest, probe.Status.PodIP)
			if err != nil {
				return err
			}
			if code != 200 || !strings.Contains(body, "Hello from Backend") {
				return fmt.Errorf("CONNECT answered %d: %q", code, body)
			}
			return nil
		})
		deniedBefore := metricValue(k.must("", "get", "--raw", "/api/v1/nodes/"+nodeB+":9890/proxy/metrics"),
			`membrane_mutual_auth_connections_total{outcome="denied"}`)
		for _, claim := range []struct{ name, ip string }{
			{"the frontend's address", remoteFront.Status.PodIP},
			{"its own address", intruder.Status.PodIP},
		} {
			code, body, err := connectTunnel(t.Context(), podNetns(intruder), tunnel, intruderSVID, backendID, dest, claim.ip)
			t.Logf("intruder (sa/intruder) claiming %s %s: CONNECT %d %q %v", claim.name, claim.ip, code, head(body, 1), err)
			if code == 200 || strings.Contains(body, "Hello from Backend") {
				t.Errorf("the intruder claiming %s reached the backend", claim.name)
			}
			if err == nil && code != 403 {
				t.Errorf("the intruder claiming %s: CONNECT answered %d, want 403 (RBAC)", claim.name, code)
			}
		}
		// The refused tunnels come from the intruder (who connected), not
		// from the address it claimed.
		line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/intruder", "--to-pod", ns + "/" + backend.Name},
			ns+"/intruder", "L7 policy denied DROPPED", "mTLS spiffe://cluster.local/ns/"+ns+"/sa/intruder -> "+backendID.String()+" 403")
		t.Logf("intruder: %s", line)
		eventually(t, 30*time.Second, "the denied connections in the metrics", func() error {
			after := metricValue(k.must("", "get", "--raw", "/api/v1/nodes/"+nodeB+":9890/proxy/metrics"),
				`membrane_mutual_auth_connections_total{outcome="denied"}`)
			if after < deniedBefore+2 {
				return fmt.Errorf("membrane_mutual_auth_connections_total{outcome=\"denied\"} %v, was %v", after, deniedBefore)
			}
			return nil
		})
	})

	t.Run("allowed address without the proxy", func(t *testing.T) {
		// An allowed pod's own connections are redirected to the proxy at
		// its own interface. A pod sending from an allowed pod's address it
		// does not own (the intruder, given the remote frontend's address
		// as a second one, as a pod with NET_ADMIN can) is dropped at its
		// own interface.
		if out, err := exec.Command("nsenter", "--net="+podNetns(intruder), "--",
			"ip", "addr", "add", remoteFront.Status.PodIP+"/32", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("add %s to the intruder: %v %s", remoteFront.Status.PodIP, err, out)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+podNetns(intruder), "--",
			"curl", "-s", "-m", "3", "--interface", remoteFront.Status.PodIP, url).CombinedOutput()
		if err == nil || strings.Contains(string(out), "Hello from Backend") {
			t.Errorf("the intruder reached the backend from the frontend's address: %v %s", err, out)
		}
		line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--to-pod", ns + "/" + backend.Name, "--port", "8080"},
			ns+"/"+remoteFront.Name, "-> "+ns+"/"+backend.Name+":8080", "Invalid source ip DROPPED")
		t.Logf("intruder with the frontend's address: %s", line)
		// Past every pod interface (sent by the frontend's node itself,
		// as a raw SYN from the frontend's address), it reaches the
		// backend's node as a connection from an allowed pod that did not
		// come through the proxy: dropped there.
		front, err := netip.ParseAddr(remoteFront.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := netip.ParseAddr(backend.Status.PodIP)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := spoofSYN(s.Layout().NodeNetns(nodeA), front, dst, 8080); err != nil {
				t.Fatalf("raw SYN from %s: %v", front, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		line = expectFlow(t, k, []string{"--verdict", "DROPPED", "--to-pod", ns + "/" + backend.Name, "--port", "8080"},
			ns+"/"+remoteFront.Name+":40404", "-> "+ns+"/"+backend.Name+":8080", "Authentication required DROPPED")
		t.Logf("raw SYN from the frontend's address: %s", line)
		// A pod the rule allows by its labels cannot skip the proxy: its
		// plain connection to the backend (from its own address) is
		// authenticated with its own SVID on the way.
		want := "mTLS spiffe://cluster.local/ns/" + ns + "/sa/frontend -> spiffe://cluster.local/ns/" + ns + "/sa/backend 200"
		flows := func() int {
			out := k.membrane("observe", "--last", "1000", "--from-pod", ns+"/probe", "--to-pod", ns+"/"+backend.Name, "--type", "l7")
			return strings.Count(out, want)
		}
		before := flows()
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialIn(podNetns(probe)), DisableKeepAlives: true}}
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("probe pod to the backend: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "Hello from Backend") {
			t.Fatalf("probe pod to the backend: %s %q", resp.Status, body)
		}
		eventually(t, 20*time.Second, "the probe pod's plain connection as an authenticated flow", func() error {
			if n := flows(); n <= before {
				return fmt.Errorf("%d authenticated flows from the probe pod, %d before its plain connection", n, before)
			}
			return nil
		})
	})

	t.Run("SVID and CA rotation under a request loop", func(t *testing.T) {
		certs := func() string {
			return serials(envoyAdmin(t, s.Layout().NodeNetns(nodeB), "/certs"))
		}
		before := certs()
		oldCAs := map[string]bool{}
		for _, ca := range nodeSVIDs(t, k, nodeB).Bundle {
			oldCAs[ca.Fingerprint] = true
		}
		seconds := int(p.loop / time.Second)
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.loop+60*time.Second)
			defer cancel()
			// One new connection every 200 ms, each bounded by 3 s.
			script := fmt.Sprintf(`ok=0; failed=0; end=$(( $(date +%%s) + %d )); n=0
while [ $(date +%%s) -lt $end ] && [ $n -lt 3000 ]; do n=$((n+1))
  if timeout 3 wget -qO- %s 2>/dev/null | grep -q "Hello from Backend"; then ok=$((ok+1)); else failed=$((failed+1)); fi
  sleep 0.2
done; echo ok=$ok failed=$failed`, seconds, url)
			out, err := k.run(ctx, "", "-n", ns, "exec", remoteFront.Name, "--", "sh", "-c", script)
			done <- result{out, err}
		}()
		time.Sleep(20 * time.Second)
		rotStart := time.Now()
		did := p.rotateCA(t, k)
		rotTook := time.Since(rotStart).Round(time.Second)
		r := <-done
		var ok, failed int
		if _, err := fmt.Sscanf(strings.TrimSpace(r.out), "ok=%d failed=%d", &ok, &failed); r.err != nil || err != nil {
			t.Fatalf("request loop: %v %v: %s", r.err, err, r.out)
		}
		after := certs()
		t.Logf("request loop over %d s with SVIDs renewed every 30 s and a CA rotation (%s, %s, within the loop: %v): %d ok, %d failed (target 0); Envoy certificate serials before %q, after %q",
			seconds, did, rotTook, 20*time.Second+rotTook < p.loop, ok, failed, before, after)
		if 20*time.Second+rotTook >= p.loop {
			t.Errorf("the CA rotation (%s) outlasted the request loop (%s)", rotTook, p.loop)
		}
		if before == after {
			t.Errorf("the node Envoy's certificates did not change: %q", after)
		}
		if failed != 0 || ok == 0 {
			t.Errorf("%d of %d requests failed during rotation", failed, ok+failed)
		}
		// The rotation is real: the node's SVIDs are signed by a CA that was
		// not in the bundle before (and, with SPIRE, the old CA is gone
		// from the bundle).
		eventually(t, 90*time.Second, nodeB+"'s SVIDs signed by the new CA", func() error {
			l := nodeSVIDs(t, k, nodeB)
			for _, sv := range l.SVIDs {
				if oldCAs[sv.Issuer] {
					return fmt.Errorf("%s is still signed by the old CA %.12s", sv.SPIFFEID, sv.Issuer)
				}
			}
			for _, ca := range l.Bundle {
				if !p.oldCAsStay && oldCAs[ca.Fingerprint] {
					return fmt.Errorf("the old CA %.12s is still in the bundle", ca.Fingerprint)
				}
			}
			if len(l.SVIDs) == 0 {
				return errors.New("no SVIDs")
			}
			return nil
		})
	})

	t.Run("taking access away stops an open authenticated connection", func(t *testing.T) {
		// The tunnel's stream outlives the change (its authorization is
		// checked when it opens), but the backend node's Envoy connects
		// to the backend with the frontend's address, and the datapath
		// checks that connection again: nothing more gets through.
		c, err := dialKept(podNetns(remoteFront), net.JoinHostPort(backend.Status.PodIP, "8080"))
		if err != nil {
			t.Fatalf("connect from %s: %v", remoteFront.Name, err)
		}
		defer c.c.Close()
		if resp, err := c.get("/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET / before the change: %v, %v", resp, err)
		}
		k.must(strings.Replace(mtlsPolicy(ns, true), "app: frontend", "app: nobody", 1), "apply", "-f", "-")
		defer func() {
			k.must(mtlsPolicy(ns, true), "apply", "-f", "-")
			waitFrontendsReach(t, k, ns, url, remoteFront, localFront)
		}()
		eventually(t, 60*time.Second, "no answer on the open connection", func() error {
			if resp, err := c.get("/"); err == nil {
				return fmt.Errorf("answered %d", resp.StatusCode)
			}
			return nil
		})
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

// waitFrontendsReach waits (90 s at most) until both frontends get the
// backend's answer at url, through mutual TLS once a policy requires it.
func waitFrontendsReach(t *testing.T, k *kube, ns, url string, remoteFront, localFront corev1.Pod) {
	t.Helper()
	eventually(t, 90*time.Second, "the frontends reach the backend through mutual TLS", func() error {
		for _, f := range []corev1.Pod{remoteFront, localFront} {
			if err := fetch(k, ns, f.Name, url); err != nil {
				return fmt.Errorf("%s: %w", f.Name, err)
			}
		}
		return nil
	})
}

// captureFetches captures node's underlay while pod fetches url five
// times: the capture and tcpdump's summary of it.
func captureFetches(t *testing.T, s *localcluster.State, k *kube, node, ns, pod, url string) ([]byte, string) {
	t.Helper()
	return captureUnderlay(t, s, node, func() {
		for range 5 {
			if err := fetch(k, ns, pod, url); err != nil {
				t.Errorf("fetch during the capture: %v", err)
			}
		}
	})
}

// checkNoPlaintext fails t when a capture of the underlay held the
// backend's answer (plain times) or packets on the backend's port 8080
// (direct).
func checkNoPlaintext(t *testing.T, plain, direct int) {
	t.Helper()
	if plain != 0 || direct != 0 {
		t.Errorf("plaintext on the underlay: answer %d times, %d packets on port 8080", plain, direct)
	}
}

// mtlsFlowIDs is how observe shows an authenticated flow from a frontend
// to the backend in namespace ns: both SPIFFE IDs.
func mtlsFlowIDs(ns string) string {
	return "mTLS spiffe://cluster.local/ns/" + ns + "/sa/frontend -> spiffe://cluster.local/ns/" + ns + "/sa/backend"
}

// checkAuthenticatedFlows runs two subtests: observe shows remoteFront's
// flow to the backend with both SPIFFE IDs, and the backend's log shows
// both frontends' addresses.
func checkAuthenticatedFlows(t *testing.T, k *kube, ns string, backend, remoteFront, localFront corev1.Pod) {
	t.Run("observe shows both SPIFFE IDs", func(t *testing.T) {
		line := expectFlow(t, k, []string{"--to-pod", ns + "/" + backend.Name, "--port", "8080", "--type", "l7"},
			ns+"/"+remoteFront.Name, mtlsFlowIDs(ns)+" 200")
		t.Logf("authenticated flow: %s", line)
	})

	t.Run("backend sees the frontend's address", func(t *testing.T) {
		checkFrontendAddresses(t, k, ns, backend, remoteFront, localFront)
	})
}

// checkFrontendAddresses: the backend's log shows both frontends' pod
// addresses as its peers (the tunnel connected from the client's address).
func checkFrontendAddresses(t *testing.T, k *kube, ns string, backend, remoteFront, localFront corev1.Pod) {
	t.Helper()
	logs := k.must("", "-n", ns, "logs", backend.Name)
	if !strings.Contains(logs, " "+remoteFront.Status.PodIP+":") || !strings.Contains(logs, " "+localFront.Status.PodIP+":") {
		t.Errorf("backend log lacks the frontends' addresses %s and %s:\n%s", remoteFront.Status.PodIP, localFront.Status.PodIP, tail(logs, 20))
	}
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
	const ns = "mtlswg"
	c := newMTLSCluster(t, localcluster.Options{
		Name: "e2e-mtlswg-", Nodes: 2, PodCIDR: "10.240.0.0/16", ServiceCIDR: "10.90.0.0/16",
		Encryption: localcluster.EncryptionWireGuard,
		HelmSet:    []string{"authentication.mutual.enabled=true"},
	}, ns, nil)
	s, k, nodeB, backend, remoteFront, localFront := c.s, c.k, c.nodeB, c.backend, c.remoteFront, c.localFront
	url := "http://" + backend.Status.PodIP + ":8080/"
	k.must(mtlsPolicy(ns, true), "apply", "-f", "-")
	waitFrontendsReach(t, k, ns, url, remoteFront, localFront)
	pcap, summary := captureFetches(t, s, k, nodeB, ns, remoteFront.Name, url)
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

// nodeSVIDs is `membrane identity svids` of one node.
func nodeSVIDs(t *testing.T, k *kube, node string) agentapi.SVIDList {
	t.Helper()
	var lists []agentapi.SVIDList
	if err := json.Unmarshal([]byte(k.membrane("identity", "svids", "--node", node, "-o", "json")), &lists); err != nil || len(lists) != 1 {
		t.Fatalf("membrane identity svids --node %s: %v (%d lists)", node, err, len(lists))
	}
	return lists[0]
}

// spireServer runs spire-server's CLI in the operator's pod.
func spireServer(ctx context.Context, k *kube, args ...string) (string, error) {
	return k.run(ctx, "", append([]string{"-n", "kube-system", "exec", "deploy/membrane-operator", "-c", "spire-server", "--",
		"/opt/spire/bin/spire-server"}, append(args, "-socketPath", "/run/spire/server/api.sock")...)...)
}

// spireReady waits for SPIRE's trust bundle and restarts the SPIRE agents
// that started before it was published (a local node fills a ConfigMap
// volume when the pod starts).
func spireReady(t *testing.T, k *kube) {
	t.Helper()
	eventually(t, 90*time.Second, "the SPIRE server publishes its trust bundle", func() error {
		out, err := k.run(t.Context(), "", "-n", "kube-system", "get", "configmap", "spire-bundle", "-o", "jsonpath={.data.bundle\\.crt}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "BEGIN CERTIFICATE") {
			return errors.New("no CA in the bundle yet")
		}
		return nil
	})
	k.must("", "-n", "kube-system", "delete", "pod", "-l", "k8s-app=spire-agent", "--wait=true", "--timeout=60s")
	k.must("", "-n", "kube-system", "rollout", "status", "daemonset/spire-agent", "--timeout=90s")
}

// authorityID is the authority ID of the object at one of keys of a
// spire-server localauthority JSON answer (protojson names the fields
// either way: authority_id or authorityId).
func authorityID(t *testing.T, answer []byte, keys ...string) string {
	t.Helper()
	var m map[string]map[string]any
	if err := json.Unmarshal(answer, &m); err != nil {
		t.Fatalf("spire-server answer %s: %v", answer, err)
	}
	for _, key := range keys {
		for _, k := range []string{"authority_id", "authorityId"} {
			if id, ok := m[key][k].(string); ok && id != "" {
				return id
			}
		}
	}
	t.Fatalf("no %v authority in %s", keys, answer)
	return ""
}

// spireRotateCA rotates SPIRE's X.509 CA the way an operator does: prepare
// a new authority (it joins the bundle), activate it once the bundle has
// propagated (it signs from then on), taint the old one (the agents renew
// every SVID it signed) and revoke it (it leaves the bundle).
func spireRotateCA(t *testing.T, k *kube) string {
	t.Helper()
	ctx := t.Context()
	run := func(args ...string) []byte {
		out, err := spireServer(ctx, k, append(append([]string{"localauthority", "x509"}, args...), "-output", "json")...)
		if err != nil {
			t.Fatalf("spire-server localauthority x509 %v: %v: %s", args, err, out)
		}
		return []byte(out)
	}
	old := authorityID(t, run("show"), "active")
	next := authorityID(t, run("prepare"), "prepared_authority", "preparedAuthority")
	// The new CA reaches every trust bundle (SPIRE agents, Membrane
	// agents, Envoys) before it signs.
	time.Sleep(20 * time.Second)
	run("activate", "-authorityID", next)
	time.Sleep(15 * time.Second)
	run("taint", "-authorityID", old)
	// The agents renew the SVIDs the tainted CA signed; with a 1 min TTL
	// they would be gone within a minute anyway.
	time.Sleep(40 * time.Second)
	run("revoke", "-authorityID", old)
	return fmt.Sprintf("SPIRE authority %.12s prepared, activated, %.12s tainted and revoked", next, old)
}

// svidPods: intruder (service account intruder, no label the rule allows)
// and probe (service account frontend, labelled app=frontend like the
// frontends), on node, both with the node's Workload API socket.
func svidPods(ns, node string) string {
	pod := func(name, sa, app string) string {
		return svidPod(ns, name, sa, node, "{app: "+app+", role: "+name+"}")
	}
	return pod("intruder", "intruder", "intruder") + pod("probe", "frontend", "frontend")
}

// podSVID is what a pod fetched from the Workload API.
type podSVID struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

// parsePodSVID reads `membrane identity fetch -o pem`: the SVID's
// certificates, its key, then the bundle's CAs.
func parsePodSVID(td spiffeid.TrustDomain, text string) (*podSVID, error) {
	var chain, key []byte
	var cas []*x509.Certificate
	rest := []byte(text)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "PRIVATE KEY":
			key = pem.EncodeToMemory(b)
		case key == nil:
			chain = append(chain, pem.EncodeToMemory(b)...)
		default:
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("bundle CA: %w", err)
			}
			cas = append(cas, c)
		}
	}
	sv, err := x509svid.Parse(chain, key)
	if err != nil {
		return nil, fmt.Errorf("SVID: %w", err)
	}
	if len(cas) == 0 {
		return nil, errors.New("no trust bundle")
	}
	return &podSVID{svid: sv, bundle: x509bundle.FromX509Authorities(td, cas)}, nil
}

// connectTunnel speaks the tunnel protocol (xds/mtls) itself from the
// network namespace at nsPath: TLS 1.3 to tunnel with id's SVID and the
// destination identity's SNI, then an HTTP/2 CONNECT to dest claiming
// client as the client's address; once connected it sends an HTTP request
// through. It returns the CONNECT's status and what came back.
func connectTunnel(ctx context.Context, nsPath, tunnel string, id *podSVID, dst spiffeid.ID, dest, client string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	raw, err := dialIn(nsPath)(ctx, "tcp", tunnel)
	if err != nil {
		return 0, "", fmt.Errorf("dial %s: %w", tunnel, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(15 * time.Second))
	cfg := tlsconfig.MTLSClientConfig(id.svid, id.bundle, tlsconfig.AuthorizeID(dst))
	cfg.ServerName = mtls.ServerName(dst)
	cfg.NextProtos = []string{"h2"}
	cfg.MinVersion = tls.VersionTLS13
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, "", fmt.Errorf("TLS handshake: %w", err)
	}
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		return 0, "", fmt.Errorf("HTTP/2: %w", err)
	}
	defer cc.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	req := (&http.Request{
		Method: http.MethodConnect, URL: &url.URL{Host: dest}, Host: dest, Body: pr,
		Header: http.Header{mtls.DestinationHeader: {dest}, "X-Forwarded-For": {client}},
	}).WithContext(ctx)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return 0, "", fmt.Errorf("CONNECT: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return resp.StatusCode, string(b), nil
	}
	go fmt.Fprintf(pw, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", dest)
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), err
}

// spoofSYN sends one TCP SYN from src:40404 to dst:port through a raw
// socket in the network namespace at nsPath.
func spoofSYN(nsPath string, src, dst netip.Addr, port uint16) error {
	pkt := make([]byte, 40)
	// IPv4: version 4, IHL 5, total length 40, DF, TTL 64, TCP.
	pkt[0], pkt[3], pkt[6], pkt[8], pkt[9] = 0x45, 40, 0x40, 64, 6
	s4, d4 := src.As4(), dst.As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20]))
	tcp := pkt[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40404)
	binary.BigEndian.PutUint16(tcp[2:], port)
	binary.BigEndian.PutUint32(tcp[4:], uint32(time.Now().UnixNano()))
	tcp[12], tcp[13] = 5<<4, 0x02 // data offset 5, SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	pseudo := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, 6, 0, 20)
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))
	return netns.Do(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
	})
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// checkIdleTimeout: a keep-alive connection from the client pod (network
// namespace clientNS) to dest over the authenticated path survives an idle
// spell shorter than idle, and is closed after one longer than idle by the
// source node's proxy (its TCP proxy's idle_timeout counter, read in the
// node's namespace nodeNS, counts it), not by the server.
func checkIdleTimeout(t *testing.T, nodeNS, clientNS, dest string, idle time.Duration) {
	t.Helper()
	var c net.Conn
	if err := netns.Do(clientNS, func() error {
		var err error
		c, err = net.DialTimeout("tcp", dest, 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", dest, err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	get := func() error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: backend\r\n\r\n"); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return fmt.Errorf("read the answer: %w", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "Hello from Backend") {
			return fmt.Errorf("answer %d %q: %v", resp.StatusCode, body, err)
		}
		return nil
	}
	idleTimeouts := func() int { return envoyStat(t, nodeNS, "tcp.membrane_mtls_outbound.idle_timeout") }
	if err := get(); err != nil {
		t.Fatalf("first request: %v", err)
	}
	time.Sleep(idle / 3)
	if err := get(); err != nil {
		t.Fatalf("request after %s idle (timeout %s): %v", idle/3, idle, err)
	}
	before := idleTimeouts()
	start := time.Now()
	c.SetDeadline(time.Now().Add(idle + 15*time.Second))
	n, err := r.ReadByte()
	closedAfter := time.Since(start)
	if err == nil {
		t.Fatalf("the idle connection got data (%q)", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection is still open %s after its last byte (idle timeout %s)", closedAfter.Round(time.Second), idle)
	}
	after := idleTimeouts()
	t.Logf("idle connection closed after %s (%v); source proxy idle timeouts %v -> %v", closedAfter.Round(100*time.Millisecond), err, before, after)
	if closedAfter < idle-time.Second {
		t.Errorf("closed after %s, before the idle timeout %s", closedAfter, idle)
	}
	if after <= before {
		t.Errorf("the source proxy counted no idle timeout: the connection was closed by something else")
	}
}

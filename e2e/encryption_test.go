package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

const (
	wgCluster   = "e2e-wg"
	wgNamespace = "wg"
	helloText   = "Hello from Backend Service!"
	// wgUnderlayMTU is the MTU of the encryption cluster's node links: a
	// cloud network's rather than the 1500 assumed when none is found,
	// so the agents must detect it.
	wgUnderlayMTU = 1450
)

// wgPods is the tutorial pair pinned across the nodes: the frontend on
// node 1, a backend on node 2 and one on node 3, behind Service backend.
const wgPods = `apiVersion: v1
kind: Namespace
metadata: {name: wg}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: wg}
spec:
  selector: {app: backend}
  ports:
  - {port: 8080, targetPort: http}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: wg, labels: {app: frontend}}
spec:
  nodeName: NODE1
  terminationGracePeriodSeconds: 2
  containers:
  - name: frontend
    image: busybox:1.36
    command: ["/bin/sh", "-c"]
    args: ["while true; do wget -q -O- http://backend:8080; sleep 2; done"]
`

func wgBackend(name, node string) string {
	return `apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: wg, labels: {app: backend}}
spec:
  nodeName: ` + node + `
  containers:
  - name: http-echo
    image: hashicorp/http-echo:1.0.0
    args: ["-text=` + helloText + `", "-listen=:8080"]
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
`
}

// wgEnv is the encrypted cluster of TestEncryption.
type wgEnv struct {
	t     *testing.T
	k     *kube
	s     *localcluster.State
	log   *slog.Logger
	nodes []string
}

// TestEncryption brings up a 3-node cluster with WireGuard and checks what
// the wire carries, key persistence and rotation under traffic, turning
// encryption off and on, bad keys, and nodes leaving and joining.
func TestEncryption(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	_ = localcluster.Down(ctx, log, wgCluster)
	s, err := localcluster.Up(ctx, log, localcluster.Options{
		Name: wgCluster, Nodes: 3, PodCIDR: "10.246.0.0/16", ServiceCIDR: "10.98.0.0/16",
		ToolsDir: shared.toolsDir, BinDir: shared.binDir, Encryption: localcluster.EncryptionWireGuard,
		UnderlayMTU: wgUnderlayMTU,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := localcluster.Down(context.Background(), log, wgCluster); err != nil {
			t.Errorf("down %s: %v", wgCluster, err)
		}
		// The UAPI sockets lived in each agent container's own mount
		// namespace.
		if entries, _ := os.ReadDir("/run/wireguard"); len(entries) != 0 {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), wireguard.DeviceName) {
					t.Errorf("UAPI socket /run/wireguard/%s left on the host", e.Name())
				}
			}
		}
	})
	w := &wgEnv{t: t, k: &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}, s: s, log: log}
	for _, n := range s.Nodes {
		w.nodes = append(w.nodes, n.Name)
	}
	n1, n2, n3 := w.nodes[0], w.nodes[1], w.nodes[2]
	w.k.must(strings.ReplaceAll(wgPods, "NODE1", n1)+"---\n"+wgBackend("backend-2", n2)+"---\n"+wgBackend("backend-3", n3), "apply", "-f", "-")
	w.k.must("", "-n", wgNamespace, "wait", "--for=condition=Ready", "pod/frontend", "pod/backend-2", "pod/backend-3", "--timeout=90s")
	backend2 := w.podIP("backend-2")
	w.converged(3)
	w.reachable(backend2)

	t.Run("only WireGuard between the nodes, no plaintext", func(t *testing.T) {
		w := w.in(t)
		pcap, summary := w.capture(n1, func() { w.requests(backend2, 10) })
		if c := bytes.Count(pcap, []byte(helloText)); c != 0 {
			t.Fatalf("the capture holds the plaintext response %d times", c)
		}
		n1IP, n2IP := w.nodeIP(n1), w.nodeIP(n2)
		tunnel := w.countPackets(pcap, fmt.Sprintf("host %s and host %s and udp port %d", n1IP, n2IP, wireguard.ListenPort))
		other := w.countPackets(pcap, fmt.Sprintf("ip and not (udp port %d)", wireguard.ListenPort))
		pods := w.countPackets(pcap, "net 10.246.0.0/16")
		if tunnel == 0 || other != 0 || pods != 0 {
			t.Fatalf("want only UDP %d between node IPs: %d tunnel packets, %d other IP packets, %d with pod addresses\n%s", wireguard.ListenPort, tunnel, other, pods, summary)
		}
		t.Logf("capture on %s eth0: %d bytes, %d WireGuard packets %s<->%s, 0 other IP packets, plaintext response 0 times", n1, len(pcap), tunnel, n1IP, n2IP)
	})

	t.Run("pods and the device fit the underlay's MTU", func(t *testing.T) {
		w := w.in(t)
		mtuOf := func(node, dev string) int {
			t.Helper()
			f := strings.Fields(w.inNode(node, "ip", "-o", "link", "show", dev))
			i := slices.Index(f, "mtu")
			if i < 0 || i+1 == len(f) {
				t.Fatalf("%s %s: no mtu in %v", node, dev, f)
			}
			n, err := strconv.Atoi(f[i+1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		// No datapath.mtu is set: the agents found their nodes' eth0's,
		// which is not the 1500 assumed without one.
		underlay := mtuOf(n1, "eth0")
		if underlay != wgUnderlayMTU {
			t.Fatalf("%s eth0 MTU %d: the local cluster's underlay is not the %d asked for", n1, underlay, wgUnderlayMTU)
		}
		want := underlay - wireguard.Overhead
		for _, n := range w.nodes {
			if got := mtuOf(n, wireguard.DeviceName); got != want {
				t.Errorf("%s: %s MTU %d, want %d (the underlay's %d less %d)", n, wireguard.DeviceName, got, want, underlay, wireguard.Overhead)
			}
		}
		got := strings.TrimSpace(w.k.must("", "-n", wgNamespace, "exec", "frontend", "--", "cat", "/sys/class/net/eth0/mtu"))
		if got != strconv.Itoa(want) {
			t.Errorf("frontend's eth0 MTU %s, want %d: a full-size packet must fit the tunnel", got, want)
		}
		t.Logf("underlay MTU %d (detected by the agents); %s and the pods' interfaces %d", underlay, wireguard.DeviceName, want)
	})

	t.Run("status, CLI and metrics", func(t *testing.T) {
		w := w.in(t)
		table := w.k.membrane("encryption", "status")
		for _, want := range []string{"embedded backend", "port 51871", "sha256:", n2, "10.246."} {
			if !strings.Contains(table, want) {
				t.Errorf("status table lacks %q:\n%s", want, table)
			}
		}
		// `membrane status` sums it up per node: 3 nodes, 2 peers each.
		summary := w.k.membrane("status")
		if n := strings.Count(summary, "wireguard embedded, key sha256:"); n != 3 || strings.Count(summary, ", 2 peers") != 3 {
			t.Errorf("membrane status: want every node's WireGuard device with 2 peers:\n%s", summary)
		}
		for node, st := range w.status() {
			if strings.Contains(table, w.k.node(node).Annotations[wireguard.AnnotationPublicKey]) {
				t.Errorf("status prints %s's public key itself", node)
			}
			// The agent refreshes its device metrics periodically.
			var m string
			eventually(t, 20*time.Second, node+" WireGuard metrics", func() error {
				m = w.metrics(node)
				if metricValue(m, "membrane_wireguard_peers") != 2 || metricValue(m, "membrane_wireguard_handshakes_total") < 1 ||
					metricValue(m, `membrane_wireguard_device_info{backend="embedded"}`) != 1 {
					return fmt.Errorf("peers %v handshakes %v", metricValue(m, "membrane_wireguard_peers"), metricValue(m, "membrane_wireguard_handshakes_total"))
				}
				return nil
			})
			t.Logf("%s: key %s, %d peers, handshakes %v", node, st.WireGuard.PublicKeyFingerprint, len(st.WireGuard.Peers), metricValue(m, "membrane_wireguard_handshakes_total"))
		}
		keyFile := filepath.Join(w.s.Layout().NodeAgentStateDir(n1), wireguard.KeyFileName)
		if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v %v", keyFile, fi, err)
		}
		logs := w.agentLog(n1)
		raw, _ := os.ReadFile(keyFile)
		if secret := strings.TrimSpace(string(raw)); secret == "" || strings.Contains(logs, secret) || strings.Contains(w.k.must("", "get", "node", "-o", "yaml"), secret) {
			t.Fatal("the private key is in the agent log or in a Node object")
		}
	})

	t.Run("connectivity test sees the traffic in the tunnel", func(t *testing.T) {
		w := w.in(t)
		out := w.k.membrane("connectivity", "test", "--namespace", "membrane-ct-wg", "--test", "^(pod-to-pod|encryption)/")
		t.Logf("membrane connectivity test:\n%s", out)
		if !strings.Contains(out, "✓ encryption/pod-to-pod-cross-node ") || !strings.Contains(out, "WireGuard tunnel to") ||
			!strings.Contains(out, "3 passed, 0 failed, 12 skipped") {
			t.Errorf("want the encryption check passed beside the two pod-to-pod checks")
		}
	})

	t.Run("off and on again converges without restarting pods", func(t *testing.T) {
		w := w.in(t)
		before := w.podStates()
		keys := w.fingerprints()
		if err := localcluster.SetEncryption(t.Context(), w.log, shared.toolsDir, wgCluster, ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "device, rule, routes and annotations gone", func() error {
			for _, n := range w.nodes {
				if a, ok := w.k.node(n).Annotations[wireguard.AnnotationPublicKey]; ok {
					return fmt.Errorf("%s still publishes %q", n, a)
				}
				if out := w.inNode(n, "ip", "-o", "link", "show"); strings.Contains(out, wireguard.DeviceName) {
					return fmt.Errorf("%s still has %s", n, wireguard.DeviceName)
				}
				if out := w.inNode(n, "ip", "rule"); strings.Contains(out, strconv.Itoa(wireguard.RouteTable)) {
					return fmt.Errorf("%s still has the rule: %s", n, out)
				}
			}
			return nil
		})
		// The control: the same capture does see the plaintext now.
		w.reachable(backend2)
		pcap, summary := w.capture(n1, func() { w.requests(backend2, 10) })
		if c := bytes.Count(pcap, []byte(helloText)); c == 0 {
			t.Fatalf("without encryption the capture should hold the plaintext response\n%s", summary)
		} else {
			t.Logf("encryption off: the capture on %s eth0 holds the plaintext response %d times", n1, c)
		}

		if err := localcluster.SetEncryption(t.Context(), w.log, shared.toolsDir, wgCluster, localcluster.EncryptionWireGuard); err != nil {
			t.Fatal(err)
		}
		w.converged(3)
		w.reachable(backend2)
		if after := w.fingerprints(); fmt.Sprint(after) != fmt.Sprint(keys) {
			t.Errorf("keys changed across off/on: %v -> %v", keys, after)
		}
		pcap, summary = w.capture(n1, func() { w.requests(backend2, 10) })
		if c := bytes.Count(pcap, []byte(helloText)); c != 0 {
			t.Fatalf("encryption back on: plaintext %d times\n%s", c, summary)
		}
		if after := w.podStates(); after != before {
			t.Fatalf("pods restarted or replaced:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("agent restart keeps the key and the tunnel", func(t *testing.T) {
		w := w.in(t)
		keys := w.fingerprints()
		res := w.loop(backend2, 10*time.Second, func() {
			for _, n := range []string{n2, n1} {
				if err := localcluster.RestartAgent(t.Context(), w.log, wgCluster, n); err != nil {
					t.Fatal(err)
				}
			}
		})
		w.converged(3)
		if after := w.fingerprints(); fmt.Sprint(after) != fmt.Sprint(keys) {
			t.Fatalf("keys changed across agent restarts: %v -> %v", keys, after)
		}
		t.Logf("request loop %s->%s across both agents' restarts: %s", n1, n2, res)
		if res.ok == 0 || res.failed != 0 {
			t.Errorf("requests failed across agent restarts: %s", res)
		}
	})

	t.Run("rotate-key under traffic", func(t *testing.T) {
		w := w.in(t)
		old := w.fingerprints()[n2]
		oldAnnotation := w.k.node(n2).Annotations[wireguard.AnnotationPublicKey]
		var rotated agentapi.RotateResult
		var rotatedAt time.Time
		res := w.loop(backend2, 12*time.Second, func() {
			mustJSON(t, w.k.membrane("encryption", "rotate-key", "--node", n2, "-o", "json"), &rotated)
			rotatedAt = time.Now()
		})
		if rotated.PreviousFingerprint != old || rotated.PublicKeyFingerprint == old || rotated.PublicKeyFingerprint == "" {
			t.Fatalf("rotate-key answered %+v; key was %s", rotated, old)
		}
		if w.k.node(n2).Annotations[wireguard.AnnotationPublicKey] == oldAnnotation {
			t.Fatal("the annotation still holds the old key")
		}
		for _, n := range []string{n1, n3} {
			p := w.peer(n, n2)
			if p == nil || p.PublicKeyFingerprint != rotated.PublicKeyFingerprint || p.LatestHandshake.Before(rotatedAt.Add(-time.Second)) {
				t.Fatalf("%s's peer %s after rotation: %+v (want key %s, handshake after %s)", n, n2, p, rotated.PublicKeyFingerprint, rotatedAt)
			}
		}
		t.Logf("rotate-key on %s (%s -> %s) during a request loop from %s: %s", n2, rotated.PreviousFingerprint, rotated.PublicKeyFingerprint, n1, res)
		if res.ok == 0 || res.maxGap > 5 {
			t.Fatalf("traffic did not recover within 5 s: %s", res)
		}
		if res.failed != 0 {
			t.Errorf("requests failed during rotation: %s", res)
		}
	})

	t.Run("a garbage key is skipped, every other peer keeps working", func(t *testing.T) {
		w := w.in(t)
		const bogus = "e2e-wg-bogus"
		before := map[string]float64{}
		for _, n := range w.nodes {
			before[n] = metricValue(w.metrics(n), `membrane_agent_skipped_input_total{kind="WireGuardPeer"}`)
		}
		w.k.must(`apiVersion: v1
kind: Node
metadata:
  name: `+bogus+`
  annotations: {`+wireguard.AnnotationPublicKey+`: "this-is-not-a-key"}
`, "apply", "-f", "-")
		t.Cleanup(func() { _, _ = w.k.run(context.Background(), "", "delete", "node", bogus, "--ignore-not-found") })
		w.k.must("", "patch", "node", bogus, "--subresource=status", "--type=merge", "-p",
			`{"status":{"addresses":[{"type":"InternalIP","address":"`+w.s.Layout().NodeIP(99).String()+`"}]}}`)
		eventually(t, 15*time.Second, "every agent skips "+bogus, func() error {
			for n, st := range w.status() {
				if len(st.Skipped) != 1 || st.Skipped[0].Node != bogus || len(st.WireGuard.Peers) != 2 {
					return fmt.Errorf("%s: skipped %+v, %d peers", n, st.Skipped, len(st.WireGuard.Peers))
				}
				m := w.metrics(n)
				if metricValue(m, "membrane_wireguard_skipped_peers") != 1 || metricValue(m, `membrane_agent_skipped_input_total{kind="WireGuardPeer"}`) < before[n]+1 {
					return fmt.Errorf("%s: metrics not counted", n)
				}
			}
			return nil
		})
		logs := w.agentLog(n1)
		if !strings.Contains(logs, `level=WARN msg="skipped WireGuard peer"`) || !strings.Contains(logs, "peer="+bogus) {
			t.Error("no warning about the skipped peer in the agent log")
		}
		eventually(t, 10*time.Second, "Warning Event on "+bogus, func() error {
			out := w.k.must("", "get", "events", "-A", "--field-selector", "involvedObject.name="+bogus+",reason=InvalidWireGuardPeer", "-o", "name")
			if strings.TrimSpace(out) == "" {
				return fmt.Errorf("no event")
			}
			return nil
		})
		w.requests(backend2, 3)
		pcap, _ := w.capture(n1, func() { w.requests(backend2, 3) })
		if bytes.Count(pcap, []byte(helloText)) != 0 {
			t.Fatal("plaintext on the wire while a bad peer is skipped")
		}
		// Garbage on a live node's own annotation: its agent puts its key back.
		good := w.k.node(n2).Annotations[wireguard.AnnotationPublicKey]
		w.k.must("", "annotate", "node", n2, "--overwrite", wireguard.AnnotationPublicKey+"=garbage")
		eventually(t, 10*time.Second, n2+" republishes its key", func() error {
			if a := w.k.node(n2).Annotations[wireguard.AnnotationPublicKey]; a != good {
				return fmt.Errorf("annotation %q", a)
			}
			return nil
		})
		w.k.must("", "delete", "node", bogus)
		eventually(t, 15*time.Second, "skipped peers back to 0", func() error {
			for n := range w.status() {
				if v := metricValue(w.metrics(n), "membrane_wireguard_skipped_peers"); v != 0 {
					return fmt.Errorf("%s: %v", n, v)
				}
			}
			return nil
		})
		w.converged(3)
	})

	t.Run("a removed node leaves every peer list, an added one is reachable", func(t *testing.T) {
		w := w.in(t)
		key3 := w.fingerprints()[n3]
		w.k.must("", "delete", "node", n3)
		eventually(t, 15*time.Second, n3+" gone from every peer list", func() error {
			for _, n := range []string{n1, n2} {
				if p := w.peer(n, n3); p != nil {
					return fmt.Errorf("%s still has peer %s", n, n3)
				}
				if out := w.inNode(n, "ip", "route", "show", "table", strconv.Itoa(wireguard.RouteTable)); strings.Count(out, "dev "+wireguard.DeviceName) != 1 {
					return fmt.Errorf("%s tunnel routes: %s", n, out)
				}
			}
			return nil
		})
		// The node joins again: its node runner registers it at start.
		if _, err := localcluster.Restart(t.Context(), w.log, wgCluster, "node-runner/"+n3); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, n3+" back in every peer list", func() error {
			for _, n := range []string{n1, n2} {
				p := w.peer(n, n3)
				if p == nil || p.PublicKeyFingerprint != key3 || len(p.AllowedIPs) != 1 || p.LatestHandshake.IsZero() {
					return fmt.Errorf("%s: peer %s %+v", n, n3, p)
				}
			}
			return nil
		})
		w.k.must(strings.Replace(wgBackend("echo-3", n3), "app: backend", "app: echo", 1), "apply", "-f", "-")
		w.k.must("", "-n", wgNamespace, "wait", "--for=condition=Ready", "pod/echo-3", "--timeout=90s")
		ip := w.podIP("echo-3")
		w.reachable(ip)
		pcap, _ := w.capture(n1, func() { w.requests(ip, 5) })
		if c := bytes.Count(pcap, []byte(helloText)); c != 0 {
			t.Fatalf("traffic to the re-added node in plaintext (%d)", c)
		}
		if n := w.countPackets(pcap, fmt.Sprintf("host %s and udp port %d", w.nodeIP(n3), wireguard.ListenPort)); n == 0 {
			t.Fatalf("no WireGuard packets to %s", n3)
		}
		t.Logf("%s re-registered; pod %s on it reached from %s through the tunnel", n3, ip, n1)
	})
}

// in is w for a subtest: failures end the subtest, not its parent.
func (w *wgEnv) in(t *testing.T) *wgEnv {
	c := *w
	c.t = t
	c.k = &kube{t: t, kubeconfig: w.k.kubeconfig, kubectlPath: w.k.kubectlPath}
	return &c
}

// agentLog is what node's agent logged (its container's log).
func (w *wgEnv) agentLog(node string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.t.Context(), 30*time.Second)
	defer cancel()
	logs, err := localcluster.AgentLog(ctx, wgCluster, node)
	if err != nil || logs == "" {
		w.t.Fatalf("the log of the agent on %s: %v (%d bytes)", node, err, len(logs))
	}
	return logs
}

// converged waits until every node has a handshake with each of the
// other n-1 nodes.
func (w *wgEnv) converged(n int) {
	w.t.Helper()
	eventually(w.t, 30*time.Second, "WireGuard peers with handshakes on every node", func() error {
		sts, err := w.tryStatus()
		if err != nil {
			return err
		}
		if len(sts) != n {
			return fmt.Errorf("%d nodes answered", len(sts))
		}
		for node, st := range sts {
			if st.WireGuard == nil || len(st.WireGuard.Peers) != n-1 {
				return fmt.Errorf("%s: %+v", node, st)
			}
			for _, p := range st.WireGuard.Peers {
				if p.LatestHandshake.IsZero() {
					return fmt.Errorf("%s: no handshake with %s yet", node, p.Node)
				}
			}
		}
		return nil
	})
}

func (w *wgEnv) tryStatus() (map[string]agentapi.EncryptionStatus, error) {
	ctx, cancel := context.WithTimeout(w.t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), "--kubeconfig", w.k.kubeconfig, "encryption", "status", "-o", "json")
	// A node without an agent (the bogus one) makes the command exit 1
	// after printing the others' answers: those are what counts here.
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var list []agentapi.EncryptionStatus
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("membrane encryption status: %v: %s", runErr, stderr.String())
	}
	m := map[string]agentapi.EncryptionStatus{}
	for _, s := range list {
		m[s.Node] = s
	}
	return m, nil
}

func (w *wgEnv) status() map[string]agentapi.EncryptionStatus {
	w.t.Helper()
	m, err := w.tryStatus()
	if err != nil {
		w.t.Fatal(err)
	}
	return m
}

func (w *wgEnv) fingerprints() map[string]string {
	out := map[string]string{}
	for n, st := range w.status() {
		if st.WireGuard != nil {
			out[n] = st.WireGuard.PublicKeyFingerprint
		}
	}
	return out
}

// peer is node's peer entry for other, nil when there is none.
func (w *wgEnv) peer(node, other string) *agentapi.PeerStatus {
	st, ok := w.status()[node]
	if !ok || st.WireGuard == nil {
		return nil
	}
	for _, p := range st.WireGuard.Peers {
		if p.Node == other {
			return &p
		}
	}
	return nil
}

func (w *wgEnv) metrics(node string) string {
	return w.k.must("", "get", "--raw", "/api/v1/nodes/"+node+":9890/proxy/metrics")
}

// metricValue sums the samples of a metric (name, or name{labels}).
func metricValue(text, name string) float64 {
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+" ") && !(strings.HasPrefix(line, name+"{") && !strings.Contains(name, "{")) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		total += v
	}
	return total
}

func (w *wgEnv) podIP(name string) string {
	return strings.TrimSpace(w.k.must("", "-n", wgNamespace, "get", "pod", name, "-o", "jsonpath={.status.podIP}"))
}

func (w *wgEnv) nodeIP(node string) string {
	for _, n := range w.s.Nodes {
		if n.Name == node {
			return n.IP
		}
	}
	w.t.Fatalf("no node %s", node)
	return ""
}

// podStates is every pod's UID and restart count, to tell that none was
// restarted or replaced.
func (w *wgEnv) podStates() string {
	return w.k.must("", "-n", wgNamespace, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}`)
}

// inNode runs a command in a node's network namespace.
func (w *wgEnv) inNode(node string, argv ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.t.Context(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + localcluster.Layout{Name: wgCluster}.NodeNetns(node), "--"}, argv...)...).CombinedOutput()
	if err != nil {
		w.t.Fatalf("%s in %s: %v: %s", strings.Join(argv, " "), node, err, out)
	}
	return string(out)
}

// reachable waits until one request from the frontend to ip:8080 succeeds
// (a new pod's address reaches the other nodes' datapaths asynchronously).
func (w *wgEnv) reachable(ip string) {
	w.t.Helper()
	eventually(w.t, 30*time.Second, "frontend reaches "+ip, func() error {
		ctx, cancel := context.WithTimeout(w.t.Context(), 20*time.Second)
		defer cancel()
		out, err := w.k.run(ctx, "", "-n", wgNamespace, "exec", "frontend", "--", "timeout", "3", "wget", "-q", "-O-", "http://"+ip+":8080")
		if err != nil || !strings.Contains(out, helloText) {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// requests makes n requests from the frontend to ip:8080; all must succeed.
func (w *wgEnv) requests(ip string, n int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.t.Context(), time.Minute)
	defer cancel()
	out, err := w.k.run(ctx, "", "-n", wgNamespace, "exec", "frontend", "--", "sh", "-c",
		fmt.Sprintf("for i in $(seq %d); do timeout 5 wget -q -O- http://%s:8080 || echo FAILED; done", n, ip))
	if err != nil || strings.Count(out, helloText) != n {
		w.t.Fatalf("%d requests to %s: %v\n%s", n, ip, err, out)
	}
}

type loopResult struct {
	ok, failed, maxGap int
}

func (r loopResult) String() string {
	return fmt.Sprintf("%d ok, %d failed, longest time without a successful request %d s (1 s resolution)", r.ok, r.failed, r.maxGap)
}

// loop runs back-to-back requests from the frontend to ip:8080 for d
// (bounded by count too), calls during after 2 s, and returns the tally.
func (w *wgEnv) loop(ip string, d time.Duration, during func()) loopResult {
	w.t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
		defer cancel()
		script := fmt.Sprintf(`end=$(($(date +%%s)+%d)); ok=0; failed=0; i=0; last=$(date +%%s); gap=0
while [ $i -lt 20000 ] && [ $(date +%%s) -lt $end ]; do
  if timeout 5 wget -q -O- http://%s:8080 >/dev/null 2>&1; then
    ok=$((ok+1)); now=$(date +%%s); [ $((now-last)) -gt $gap ] && gap=$((now-last)); last=$now
  else failed=$((failed+1)); fi
  i=$((i+1))
done
echo ok=$ok failed=$failed gap=$gap`, int(d.Seconds()), ip)
		out, err := w.k.run(ctx, "", "-n", wgNamespace, "exec", "frontend", "--", "sh", "-c", script)
		done <- result{out, err}
	}()
	time.Sleep(2 * time.Second)
	during()
	r := <-done
	var res loopResult
	if _, err := fmt.Sscanf(strings.TrimSpace(r.out), "ok=%d failed=%d gap=%d", &res.ok, &res.failed, &res.maxGap); r.err != nil || err != nil {
		w.t.Fatalf("request loop: %v %v: %s", r.err, err, r.out)
	}
	return res
}

// capture records the underlay (eth0 of node's namespace, everything but
// the control plane's traffic) while fn runs, bounded by packet count and
// time; it returns the pcap bytes and tcpdump's summary.
func (w *wgEnv) capture(node string, fn func()) ([]byte, string) {
	w.t.Helper()
	return captureUnderlay(w.t, w.s, node, fn)
}

// captureUnderlay records the underlay of s's node (eth0 of its namespace,
// everything but the control plane's traffic) while fn runs, bounded by
// packet count and time; it returns the pcap bytes and tcpdump's summary.
func captureUnderlay(t *testing.T, s *localcluster.State, node string, fn func()) ([]byte, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "underlay.pcap")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	filter := "not host " + s.Layout().APIServerIP().String()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+s.Layout().NodeNetns(node), "--",
		"tcpdump", "-i", "eth0", "-U", "--immediate-mode", "-s", "0", "-c", "20000", "-w", file, filter)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "listening on") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("tcpdump did not start: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fn()
	time.Sleep(500 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	pcap, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read capture: %v (%s)", err, stderr.String())
	}
	out, _ := exec.Command("tcpdump", "-nn", "-r", file).CombinedOutput()
	return pcap, string(out)
}

// countPackets counts the packets of a capture that match a filter.
func (w *wgEnv) countPackets(pcap []byte, filter string) int {
	w.t.Helper()
	file := filepath.Join(w.t.TempDir(), "count.pcap")
	if err := os.WriteFile(file, pcap, 0o600); err != nil {
		w.t.Fatal(err)
	}
	out, err := exec.Command("tcpdump", "-nn", "-r", file, filter).Output()
	if err != nil {
		w.t.Fatalf("tcpdump -r %s: %v", filter, err)
	}
	return strings.Count(string(out), "\n")
}

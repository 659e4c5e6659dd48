package e2e

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
)

// apisecPods are a curl pod on each node (intruder-1, intruder-2: each
// attacks its own node's agent) and an echo server on node 2 that a
// NetworkPolicy closes to every client (its drops are flows).
const apisecPods = `apiVersion: v1
kind: Namespace
metadata: {name: apisec}
---
apiVersion: v1
kind: Pod
metadata: {name: intruder-1, namespace: apisec, labels: {app: intruder}}
spec:
  nodeName: NODE1
  terminationGracePeriodSeconds: 0
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: intruder-2, namespace: apisec, labels: {app: intruder}}
spec:
  nodeName: NODE2
  terminationGracePeriodSeconds: 0
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: target, namespace: apisec, labels: {app: target}}
spec:
  nodeName: NODE2
  terminationGracePeriodSeconds: 0
  containers:
  - name: http-echo
    image: hashicorp/http-echo:1.0.0
    args: ["-text=target", "-listen=:8080"]
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: target-closed, namespace: apisec}
spec:
  podSelector: {matchLabels: {app: target}}
  policyTypes: [Ingress]
`

// apisecViewer is a user known by a bearer token only (a service account
// outside the pods) that may read the agents (nodes/proxy get) but not
// change them (no create).
const apisecViewer = `apiVersion: v1
kind: ServiceAccount
metadata: {name: viewer, namespace: apisec}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: apisec-viewer}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list]}
- {apiGroups: [""], resources: [nodes/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: apisec-viewer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: apisec-viewer}
subjects:
- {kind: ServiceAccount, name: viewer, namespace: apisec}
`

// refusedCodes are the answers that mean "refused": no such path in
// plaintext, or no (valid) credentials.
var refusedCodes = []string{"401", "403", "404", "405"}

// TestAgentAPIClosedToPods checks that a pod can neither read the node
// agent's API nor drive it (rotate the WireGuard key), directly or through
// the agent's tunnel with its own service-account token, and cannot reach
// the node's xDS port; and that the CLI still reads and drives every agent
// through the API server.
func TestAgentAPIClosedToPods(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	name := "e2e-api-" + strconv.Itoa(os.Getpid())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s := ownCluster(t, localcluster.Options{
		Name: name, Nodes: 2, PodCIDR: "10.247.0.0/16", ServiceCIDR: "10.99.0.0/16",
		Encryption: localcluster.EncryptionWireGuard,
	})
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	w := &wgEnv{t: t, k: k, s: s, log: log}
	n1, n2 := s.Nodes[0], s.Nodes[1]
	k.must(strings.NewReplacer("NODE1", n1.Name, "NODE2", n2.Name).Replace(apisecPods), "apply", "-f", "-")
	k.must("", "-n", "apisec", "wait", "--for=condition=Ready", "pod/intruder-1", "pod/intruder-2", "pod/target", "--timeout=90s")
	// intruders[i] runs on s.Nodes[i]; podNetns is where it lives.
	intruders := []corev1.Pod{getPod(t, k, "apisec", "intruder-1"), getPod(t, k, "apisec", "intruder-2")}
	podNetns := func(i int) string {
		return filepath.Join(s.Layout().RunDir(), "netns", s.Nodes[i].Name, string(intruders[i].UID))
	}
	target := getPod(t, k, "apisec", "target")
	keyBefore := w.fingerprints()
	if keyBefore[n2.Name] == "" {
		t.Fatalf("no WireGuard key on %s: %v", n2.Name, keyBefore)
	}

	t.Run("plaintext API refused to a pod", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		for i, n := range s.Nodes {
			intruder := intruders[i]
			base := "http://" + n.IP + ":" + strconv.Itoa(localcluster.AgentPort)
			for _, req := range [][2]string{
				{"GET", "/v1/flows"}, {"GET", "/v1/flows?follow=true"}, {"GET", "/v1/endpoints"}, {"GET", "/v1/services"},
				{"GET", "/v1/status"}, {"GET", "/v1/encryption"}, {"GET", "/v1/bpf/lb"}, {"GET", "/v1/bpf/policy"},
				{"GET", "/v1/bpf/policy/ipcache/10.0.0.1"}, {"POST", "/v1/encryption/rotate-key"}, {"GET", "/v1/debug/profile?kind=heap"},
			} {
				if got := curl(k, intruder, req[0], base+req[1]); !slices.Contains(refusedCodes, got) {
					t.Errorf("pod %s: %s %s%s answered %s, want one of %v", intruder.Name, req[0], base, req[1], got, refusedCodes)
				}
			}
			// Probes and Prometheus stay open.
			for _, path := range []string{"/healthz", "/metrics"} {
				if got := curl(k, intruder, "GET", base+path); got != "200" {
					t.Errorf("pod %s: GET %s%s answered %s, want 200", intruder.Name, base, path, got)
				}
			}
		}
	})

	t.Run("tunnel refused to a pod without credentials and with its token", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		for i, n := range s.Nodes {
			intruder := intruders[i]
			token := k.must("", "-n", "apisec", "exec", intruder.Name, "--", "sh", "-c", `read -r t < /var/run/secrets/kubernetes.io/serviceaccount/token; printf %s "$t"`)
			if strings.Count(token, ".") != 2 {
				t.Fatalf("pod %s has no service-account token: %q", intruder.Name, token)
			}
			addr := net.JoinHostPort(n.IP, strconv.Itoa(localcluster.AgentPort))
			for _, c := range []struct {
				method, path, token, want string
			}{
				{"GET", "/v1/flows", "", "401"},
				{"GET", "/v1/endpoints", "", "401"},
				{"POST", "/v1/encryption/rotate-key", "", "401"},
				{"GET", "/v1/flows", token, "403"},
				{"GET", "/v1/endpoints", token, "403"},
				{"POST", "/v1/encryption/rotate-key", token, "403"},
				{"GET", "/v1/debug/profile?kind=heap", "", "401"},
				{"GET", "/v1/debug/profile?kind=heap", token, "403"},
			} {
				got, err := tunnelFromNetns(podNetns(i), addr, c.method, c.path, c.token)
				if err != nil {
					t.Errorf("pod %s: tunnel to %s: %v", intruder.Name, addr, err)
					continue
				}
				if got != c.want {
					t.Errorf("pod %s: %s %s through the tunnel of %s (token %t) answered %s, want %s", intruder.Name, c.method, c.path, addr, c.token != "", got, c.want)
				}
			}
		}
	})

	t.Run("rotate-key from a pod had no effect", func(t *testing.T) {
		w := w.in(t)
		if after := w.fingerprints(); after[n1.Name] != keyBefore[n1.Name] || after[n2.Name] != keyBefore[n2.Name] {
			t.Fatalf("WireGuard keys changed: before %v, after %v", keyBefore, after)
		}
	})

	t.Run("xDS port not reachable from a pod", func(t *testing.T) {
		for i, n := range s.Nodes {
			intruder := intruders[i]
			xds := net.JoinHostPort(n.IP, "9891")
			err := netns.Do(podNetns(i), func() error {
				c, err := net.DialTimeout("tcp", xds, 3*time.Second)
				if err == nil {
					_ = c.Close()
				}
				return err
			})
			if err == nil {
				t.Errorf("pod %s connected to %s", intruder.Name, xds)
			}
			// The port is there, on the node's loopback.
			if err := netns.Do(s.Layout().NodeNetns(n.Name), func() error {
				c, err := net.DialTimeout("tcp", "127.0.0.1:9891", 3*time.Second)
				if err == nil {
					_ = c.Close()
				}
				return err
			}); err != nil {
				t.Errorf("node %s: xDS not listening on its loopback: %v", n.Name, err)
			}
		}
	})

	t.Run("root on the node uses the local socket", func(t *testing.T) {
		for _, n := range s.Nodes {
			path := s.Layout().AgentSocket(n.Name)
			for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != want {
					t.Errorf("%s: mode %o, want %o", p, got, want)
				}
			}
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", path)
				},
			}}
			resp, err := hc.Get("http://agent/v1/status")
			if err != nil {
				t.Fatal(err)
			}
			var st struct{ Node string }
			err = json.NewDecoder(resp.Body).Decode(&st)
			_ = resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || st.Node != n.Name {
				t.Errorf("GET /v1/status on %s: %s, %+v, %v", path, resp.Status, st, err)
			}
		}
	})

	t.Run("CLI saves profiles of an agent", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		dir := t.TempDir()
		for _, c := range []struct{ kind, period string }{{"cpu", "cpu"}, {"heap", "space"}} {
			file := filepath.Join(dir, c.kind+".pprof")
			out := k.membrane("debug", "profile", "--node", n1.Name, "--kind", c.kind, "--seconds", "2", "-o", file)
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("membrane debug profile --kind %s: %v (%s)", c.kind, err, out)
			}
			p, err := profile.ParseData(raw)
			if err != nil {
				t.Fatalf("%s profile of %s: %v", c.kind, n1.Name, err)
			}
			// The agent's own functions are in the heap's allocation sites
			// (a CPU profile of an idle agent may have no sample).
			var own bool
			for _, f := range p.Function {
				own = own || strings.HasPrefix(f.Name, "github.com/membrane-mesh/membrane/")
			}
			if p.PeriodType == nil || p.PeriodType.Type != c.period || (c.kind == "cpu" && p.DurationNanos < int64(2*time.Second)) || (c.kind == "heap" && !own) {
				t.Errorf("%s profile of %s: period %v, duration %s, %d samples, the agent's functions: %v", c.kind, n1.Name, p.PeriodType, time.Duration(p.DurationNanos), len(p.Sample), own)
			}
			t.Logf("%s profile of %s: %d samples over %s, %d functions", c.kind, n1.Name, len(p.Sample), time.Duration(p.DurationNanos), len(p.Function))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		out, err := k.membraneCommand(ctx, "debug", "profile", "--node", n1.Name, "--kind", "block").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `--kind "block"`) {
			t.Errorf("membrane debug profile --kind block: %v: %s; want a refusal naming --kind", err, out)
		}
	})

	t.Run("CLI saves a support bundle", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		file := filepath.Join(t.TempDir(), "bundle.tar.gz")
		out := k.membrane("debug", "bundle", "-o", file)
		files := readBundle(t, file)
		t.Log(strings.TrimSpace(out))
		if e, ok := files["errors.txt"]; ok {
			t.Errorf("the bundle lists what it could not collect:\n%s", e)
		}
		for _, c := range []struct{ file, want string }{
			{"nodes/" + n1.Name + "/status.json", `"node":"` + n1.Name + `"`},
			{"nodes/" + n2.Name + "/endpoints.json", `"pod":"target"`},
			{"nodes/" + n1.Name + "/metrics.txt", "membrane_policy_regenerations_total"},
			{"cluster/nodes.json", n2.Name},
			{"cluster/membraneidentities.json", `"kind":"MembraneIdentityList"`},
			{"cluster/pods.json", "membrane-agent"},
		} {
			if !strings.Contains(strings.ReplaceAll(files[c.file], `": "`, `":"`), c.want) {
				t.Errorf("%s: does not hold %s (%d bytes)", c.file, c.want, len(files[c.file]))
			}
		}
		var logs, profiles int
		for name, data := range files {
			if strings.Contains(data, "PRIVATE KEY") {
				t.Errorf("%s holds a private key", name)
			}
			if strings.HasPrefix(name, "logs/") && strings.Contains(name, "membrane-agent") && strings.Contains(data, "level=") {
				logs++
			}
			if strings.HasSuffix(name, ".pprof") {
				if _, err := profile.ParseData([]byte(data)); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				profiles++
			}
		}
		if logs != len(s.Nodes) || profiles != 2*len(s.Nodes) {
			t.Errorf("%d agent logs and %d profiles, want %d and %d", logs, profiles, len(s.Nodes), 2*len(s.Nodes))
		}
	})

	t.Run("CLI reads and drives the agents through the API server", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		w := w.in(t)
		if out := k.membrane("status"); !strings.Contains(out, n1.Name) || !strings.Contains(out, n2.Name) || !strings.Contains(out, "ready") {
			t.Errorf("membrane status:\n%s", out)
		}
		if out := k.membrane("endpoint", "list"); !strings.Contains(out, "intruder-1") || !strings.Contains(out, "intruder-2") || !strings.Contains(out, "target") {
			t.Errorf("membrane endpoint list does not show the pods:\n%s", out)
		}

		// observe --follow streams a drop that happens after it started.
		followCtx, stopFollow := context.WithTimeout(t.Context(), 60*time.Second)
		defer stopFollow()
		follow := k.membraneCommand(followCtx, "observe", "-f", "-o", "json", "--to-pod", "apisec/target", "--verdict", "DROPPED")
		stdout, err := follow.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := follow.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		url := "http://" + target.Status.PodIP + ":8080/"
		var got string
		for got == "" && followCtx.Err() == nil {
			_ = curl(k, intruders[0], "GET", url) // dropped by target-closed
			select {
			case l, ok := <-lines:
				if ok && strings.Contains(l, `"DROPPED"`) {
					got = l
				}
			case <-time.After(2 * time.Second):
			}
		}
		stopFollow()
		for range lines { // drain until the command's stdout closes
		}
		_ = follow.Wait()
		if got == "" {
			t.Errorf("membrane observe -f showed no drop to %s within 60s", url)
		} else {
			t.Logf("observe -f: %s", got)
		}
		if out := k.membrane("observe", "--last", "50", "--to-pod", "apisec/target"); !strings.Contains(out, "DROPPED") {
			t.Errorf("membrane observe shows no drop to the target:\n%s", out)
		}

		// A user with a bearer token and nodes/proxy get reads, but
		// cannot rotate: that takes create.
		k.must(apisecViewer, "apply", "-f", "-")
		viewer := &kube{t: t, kubeconfig: tokenKubeconfig(t, k, strings.TrimSpace(k.must("", "-n", "apisec", "create", "token", "viewer"))), kubectlPath: k.kubectlPath}
		if out := viewer.membrane("status"); !strings.Contains(out, n2.Name) {
			t.Errorf("membrane status as the viewer:\n%s", out)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		out, err := viewer.membraneCommand(ctx, "encryption", "rotate-key", "--node", n2.Name).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "403") {
			t.Errorf("rotate-key as the viewer: %v: %s; want the agent's 403", err, out)
		} else {
			t.Logf("rotate-key as the viewer: %s", strings.TrimSpace(string(out)))
		}
		if after := w.fingerprints(); after[n2.Name] != keyBefore[n2.Name] {
			t.Fatalf("the viewer rotated %s's key", n2.Name)
		}

		var rotated struct{ PreviousFingerprint, PublicKeyFingerprint string }
		mustJSON(t, k.membrane("encryption", "rotate-key", "--node", n2.Name, "-o", "json"), &rotated)
		if rotated.PreviousFingerprint != keyBefore[n2.Name] || rotated.PublicKeyFingerprint == keyBefore[n2.Name] {
			t.Fatalf("rotate-key answered %+v; the key was %s", rotated, keyBefore[n2.Name])
		}
		if after := w.fingerprints(); after[n2.Name] != rotated.PublicKeyFingerprint {
			t.Errorf("after rotate-key, %s reports key %s, want %s", n2.Name, after[n2.Name], rotated.PublicKeyFingerprint)
		}
	})
}

// tokenKubeconfig writes a copy of k's kubeconfig whose user is token.
func tokenKubeconfig(t *testing.T, k *kube, token string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(k.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for name := range cfg.AuthInfos {
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// tunnelFromNetns does what any pod can: from the network namespace at
// path, it asks the agent at addr for its tunnel, speaks TLS over it
// (trusting any certificate) and sends one request, with token as bearer
// token when set. It returns the agent's status code, or "101-only" when
// the tunnel opened but TLS did not; a refused tunnel returns the code it
// was refused with.
func tunnelFromNetns(path, addr, method, reqPath, token string) (string, error) {
	var conn net.Conn
	if err := netns.Do(path, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", agenttunnel.Path, addr, agenttunnel.Protocol)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", fmt.Errorf("read tunnel answer: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return strconv.Itoa(resp.StatusCode), nil
	}
	if br.Buffered() != 0 {
		return "", fmt.Errorf("agent sent %d bytes after 101", br.Buffered())
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // the intruder trusts anything
	if err := tc.Handshake(); err != nil {
		return "101-only", nil
	}
	req, err := http.NewRequest(method, "https://agent"+reqPath, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if err := req.Write(tc); err != nil {
		return "", fmt.Errorf("write request: %w", err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	_ = resp.Body.Close()
	return strconv.Itoa(resp.StatusCode), nil
}

// membraneCommand is the CLI against the cluster, not yet started.
func (k *kube) membraneCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
}

// readBundle returns the files of a `membrane debug bundle` archive, by
// their names below membrane-bundle/.
func readBundle(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", file, h.Name, err)
		}
		files[strings.TrimPrefix(h.Name, "membrane-bundle/")] = string(data)
	}
}

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestDaemonSetHostPaths: a privileged hostNetwork DaemonSet of Membrane's
// own image, as the agent's will be, sees on each node that node's part of
// the shared machine: its bpffs pin directory (a map the test pinned there
// for this node, not the other node's), its cgroup v2 subtree (its own pod
// cgroup, this node's marker cgroup only), the node's network; it keeps every
// capability, and its service-account token works with client-go's
// in-cluster config (membrane's CLI inside the pod, API server address from
// KUBERNETES_SERVICE_HOST/PORT as the chart sets them). An unprivileged
// container gets exactly the capabilities it asks for, and a pod naming a
// hostPath outside the node's host paths is refused with a clear status.
func TestDaemonSetHostPaths(t *testing.T) {
	k := cluster(t)
	if len(shared.cluster.Nodes) < 2 {
		t.Skip("needs two nodes")
	}
	const ns = "ds-hostpaths"
	l := shared.cluster.Layout()
	nodes := shared.cluster.Nodes

	// Per node: a pinned map in its bpffs directory and a marker cgroup in
	// its subtree, both named after the node.
	pinName := func(node string) string { return "e2e-ds-pin-" + node }
	markerName := func(node string) string { return "e2e-ds-marker-" + node }
	cgroupOf := func(node string) string { return filepath.Join(l.CgroupDir(shared.cluster.CgroupRoot), node) }
	for _, n := range nodes {
		if err := os.MkdirAll(l.NodeBPFDir(n.Name), 0o700); err != nil {
			t.Fatalf("bpffs directory of %s (is bpffs mounted on /sys/fs/bpf?): %v", n.Name, err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			t.Fatalf("create map: %v", err)
		}
		pin := filepath.Join(l.NodeBPFDir(n.Name), pinName(n.Name))
		if err := m.Pin(pin); err != nil {
			m.Close()
			t.Fatalf("pin map: %v", err)
		}
		t.Cleanup(func() {
			if err := m.Unpin(); err != nil {
				t.Errorf("unpin %s: %v", pin, err)
			}
			m.Close()
		})
		marker := filepath.Join(cgroupOf(n.Name), markerName(n.Name))
		if err := os.Mkdir(marker, 0o755); err != nil {
			t.Fatalf("marker cgroup: %v", err)
		}
		t.Cleanup(func() {
			if err := os.Remove(marker); err != nil {
				t.Errorf("remove marker cgroup %s: %v", marker, err)
			}
		})
	}

	k.must(daemonSetManifest(ns, l.APIServerIP().String(), nodes[0].Name), "apply", "-f", "-")
	t.Cleanup(func() {
		// The pods go before the pins and cgroups they mount.
		k.must("", "delete", "namespace", ns, "--wait=true", "--timeout=90s")
		k.must("", "delete", "clusterrolebinding,clusterrole", "e2e-ds-hostpaths", "--ignore-not-found")
	})
	k.must("", "-n", ns, "rollout", "status", "daemonset/node-probe", "--timeout=120s")

	ownCaps := capEff(t, mustRead(t, "/proc/self/status"))
	pods := k.pods(ns, "app=node-probe")
	if len(pods) != len(nodes) {
		t.Fatalf("%d DaemonSet pods for %d nodes", len(pods), len(nodes))
	}
	for _, p := range pods {
		node := p.Spec.NodeName
		t.Run(node, func(t *testing.T) {
			k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
			exec := func(pod string, script string) string {
				t.Helper()
				return k.must("", "-n", ns, "exec", pod, "-c", "probe", "--", "sh", "-c", script)
			}
			// bpffs: this node's pin and no other's.
			bpf := strings.Fields(exec(p.Name, "ls /sys/fs/bpf"))
			for _, n := range nodes {
				if got, want := slices.Contains(bpf, pinName(n.Name)), n.Name == node; got != want {
					t.Errorf("/sys/fs/bpf holds %v: pin of %s visible=%v, want %v", bpf, n.Name, got, want)
				}
			}
			// cgroup v2: the node's subtree, with the pod's own cgroup in it.
			cg := strings.Fields(exec(p.Name, "ls /sys/fs/cgroup"))
			for _, n := range nodes {
				if got, want := slices.Contains(cg, markerName(n.Name)), n.Name == node; got != want {
					t.Errorf("/sys/fs/cgroup holds %v: marker of %s visible=%v, want %v", cg, n.Name, got, want)
				}
			}
			if !slices.Contains(cg, "cgroup.controllers") || !slices.Contains(cg, "pods") {
				t.Errorf("/sys/fs/cgroup is not the node's cgroup v2 subtree: %v", cg)
			}
			exec(p.Name, "test -f /sys/fs/cgroup/pods/"+string(p.UID)+"/cgroup.procs")
			rel, _ := filepath.Rel(shared.cluster.CgroupRoot, filepath.Join(cgroupOf(node), "pods", string(p.UID)))
			if self := exec(p.Name, "cat /proc/1/cgroup"); !strings.Contains(self, "0::/"+rel+"\n") {
				t.Errorf("the container's cgroup is not its pod's in the node's subtree (/%s): %q", rel, self)
			}
			// hostNetwork: the node's addresses, not the other node's.
			fib := exec(p.Name, "cat /proc/net/fib_trie")
			for _, n := range nodes {
				if got, want := strings.Contains(fib, n.IP), n.Name == node; got != want {
					t.Errorf("node %s's address %s among the container's local addresses: %v, want %v", n.Name, n.IP, got, want)
				}
			}
			// privileged: the runtime's capabilities, a writable /sys.
			if got := capEff(t, exec(p.Name, "cat /proc/1/status")); got != ownCaps {
				t.Errorf("privileged container's CapEff %s, want the node's %s", got, ownCaps)
			}
			exec(p.Name, "mkdir /sys/fs/bpf/e2e-rw-check && rmdir /sys/fs/bpf/e2e-rw-check") // bpffs: no '.' in names
			// A system path, read-only whatever the volumeMount says.
			if mnt := exec(p.Name, "grep ' /host/proc ' /proc/mounts"); !strings.Contains(mnt, " ro,") {
				t.Errorf("hostPath /proc is not mounted read-only: %q", mnt)
			}

			// The token: the real TokenRequest API's, bound to this pod, for
			// the API server's audience.
			token := exec(p.Name, "cat /var/run/secrets/kubernetes.io/serviceaccount/token")
			checkPodToken(t, k, token, p)
			// client-go's in-cluster config, through the chart's API server
			// address.
			env := exec(p.Name, "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT")
			if want := fmt.Sprintf("%s:%d\n", l.APIServerIP(), localcluster.APIServerPort); env != want {
				t.Errorf("KUBERNETES_SERVICE_HOST:PORT = %q, want %q", env, want)
			}
			var ids []struct {
				ID uint64 `json:"id"`
			}
			mustJSON(t, exec(p.Name, "membrane identity list -o json"), &ids)
			if len(ids) == 0 {
				t.Error("membrane identity list in the pod returned nothing")
			}
		})
	}

	// An unprivileged container: the default set, minus what it drops, plus
	// what it adds.
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod/unprivileged", "--timeout=90s")
	if got := capEff(t, k.must("", "-n", ns, "exec", "unprivileged", "--", "cat", "/proc/1/status")); got != "0000000000001400" {
		t.Errorf("unprivileged container with drop ALL, add NET_ADMIN and NET_BIND_SERVICE: CapEff %s, want 0000000000001400", got)
	}

	// A hostPath outside the node's host paths: refused, with the reason in
	// the pod's status; its container never starts.
	eventually(t, 60*time.Second, "pod with hostPath /etc refused", func() error {
		var p corev1.Pod
		mustJSON(t, k.must("", "-n", ns, "get", "pod", "host-etc", "-o", "json"), &p)
		want := `volume "host-etc": hostPath "/etc" is not available on this node`
		if p.Status.Reason != "SetupFailed" || !strings.Contains(p.Status.Message, want) {
			return fmt.Errorf("status reason %q, message %q; want SetupFailed with %q", p.Status.Reason, p.Status.Message, want)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil || cs.State.Terminated != nil {
				return fmt.Errorf("container %s started: %+v", cs.Name, cs.State)
			}
		}
		var events corev1.EventList
		mustJSON(t, k.must("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=host-etc,reason=SetupFailed", "-o", "json"), &events)
		if len(events.Items) == 0 || !strings.Contains(events.Items[0].Message, want) || events.Items[0].Type != corev1.EventTypeWarning {
			return fmt.Errorf("no Warning event SetupFailed with %q: %+v", want, events.Items)
		}
		return nil
	})
}

// checkPodToken checks a pod's service-account token with the API server's
// TokenReview and its claims.
func checkPodToken(t *testing.T, k *kube, token string, p corev1.Pod) {
	t.Helper()
	review := fmt.Sprintf(`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":%q}}`, token)
	var tr authenticationv1.TokenReview
	mustJSON(t, k.must(review, "create", "-o", "json", "-f", "-"), &tr)
	st := tr.Status
	wantUser := "system:serviceaccount:" + p.Namespace + ":node-probe"
	if !st.Authenticated || st.User.Username != wantUser ||
		!slices.Equal(st.User.Extra["authentication.kubernetes.io/pod-name"], []string{p.Name}) ||
		!slices.Equal(st.User.Extra["authentication.kubernetes.io/node-name"], []string{p.Spec.NodeName}) {
		t.Errorf("token review: %+v; want %s bound to pod %s on %s", st, wantUser, p.Name, p.Spec.NodeName)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode token claims: %v", err)
	}
	var claims struct {
		Aud []string `json:"aud"`
		Exp int64    `json:"exp"`
		Iat int64    `json:"iat"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	if want := "https://kubernetes.default.svc." + localcluster.ClusterDomain; !slices.Equal(claims.Aud, []string{want}) {
		t.Errorf("token audiences %v, want the API server's [%s]", claims.Aud, want)
	}
	if exp := time.Unix(claims.Exp, 0); time.Until(exp) < 50*time.Minute || claims.Exp-claims.Iat < 3607 {
		t.Errorf("token expires %s (issued %s), want at least the requested hour", exp, time.Unix(claims.Iat, 0))
	}
}

// capEff returns the CapEff field of a /proc/<pid>/status.
func capEff(t *testing.T, status string) string {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no CapEff in %q", status)
	return ""
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// daemonSetManifest: the node-probe DaemonSet (Membrane's image, as the
// agent's DaemonSet runs it), an unprivileged pod and a pod asking for /etc.
func daemonSetManifest(ns, apiServerIP, node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: node-probe, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-ds-hostpaths}
rules:
- apiGroups: [membrane.io]
  resources: [membraneidentities]
  verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-ds-hostpaths}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-ds-hostpaths}
subjects:
- {kind: ServiceAccount, name: node-probe, namespace: %[1]s}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-probe, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: node-probe}}
  template:
    metadata: {labels: {app: node-probe}}
    spec:
      serviceAccountName: node-probe
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      terminationGracePeriodSeconds: 1
      containers:
      - name: probe
        image: membrane/membrane-agent:dev
        command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
        securityContext: {privileged: true}
        env:
        - {name: KUBERNETES_SERVICE_HOST, value: "%[2]s"}
        - {name: KUBERNETES_SERVICE_PORT, value: "6443"}
        volumeMounts:
        - {name: bpf-maps, mountPath: /sys/fs/bpf, mountPropagation: HostToContainer}
        - {name: cgroup, mountPath: /sys/fs/cgroup}
        - {name: state, mountPath: /var/lib/membrane}
        - {name: host-proc, mountPath: /host/proc}
      volumes:
      - {name: bpf-maps, hostPath: {path: /sys/fs/bpf, type: DirectoryOrCreate}}
      - {name: cgroup, hostPath: {path: /sys/fs/cgroup, type: Directory}}
      - {name: state, hostPath: {path: /var/lib/membrane, type: DirectoryOrCreate}}
      - {name: host-proc, hostPath: {path: /proc, type: Directory}}
---
apiVersion: v1
kind: Pod
metadata: {name: unprivileged, namespace: %[1]s}
spec:
  nodeName: %[3]s
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: membrane/membrane-agent:dev
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
    securityContext:
      capabilities: {drop: [ALL], add: [NET_ADMIN, NET_BIND_SERVICE]}
---
apiVersion: v1
kind: Pod
metadata: {name: host-etc, namespace: %[1]s}
spec:
  nodeName: %[3]s
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    volumeMounts:
    - {name: host-etc, mountPath: /host-etc}
  volumes:
  - {name: host-etc, hostPath: {path: /etc}}
`, ns, apiServerIP, node)
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestHelmInstall: `dev up` installs Membrane with the pinned
// helm and its chart. Values the chart's schema refuses fail before anything
// of the cluster exists. The installed release runs the agents (one pod per
// node), the operator and the node Envoys; Services, NetworkPolicies and L7
// rules work through the pod-run agents; the CLI reaches every agent; a helm
// upgrade turns WireGuard on without restarting workload pods; `dev down`
// leaves none of the agents' processes, pins or cgroups.
func TestHelmInstall(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	name := "e2e-hm-" + strconv.Itoa(os.Getpid())
	opts := localcluster.Options{
		Name: name, Nodes: 2, PodCIDR: "10.253.0.0/16", ServiceCIDR: "10.104.0.0/16",
		ToolsDir: shared.toolsDir, BinDir: shared.binDir,
		// What a cluster with a private registry and its own pod metadata
		// sets (the local cluster's nodes pull nothing: the pods carry them).
		HelmSet: []string{"imagePullSecrets[0].name=" + helmPullSecret, `agent.podAnnotations.example\.com/team=network`,
			"operator.podLabels.team=network", `envoy.podAnnotations.example\.com/team=network`},
	}

	t.Run("bad values refused before anything starts", func(t *testing.T) {
		badName := "e2e-hb-" + strconv.Itoa(os.Getpid())
		t.Cleanup(func() { _ = localcluster.Down(context.Background(), log, badName) })
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), "dev", "up", "--name", badName,
			"--set", "encryption.type=ipsec", "--tools-dir", shared.toolsDir,
			"--pod-cidr", opts.PodCIDR, "--service-cidr", opts.ServiceCIDR).CombinedOutput()
		if err == nil {
			t.Fatalf("dev up --set encryption.type=ipsec succeeded:\n%s", out)
		}
		if !strings.Contains(string(out), "at '/encryption/type': value must be 'wireguard'") {
			t.Errorf("dev up's error does not name encryption.type and what it must be:\n%s", out)
		}
		t.Logf("refused in %s:\n%s", time.Since(start).Round(time.Millisecond), out)
		if _, err := localcluster.Load(badName); !errors.Is(err, localcluster.ErrNoCluster) {
			t.Errorf("a cluster record is left: %v", err)
		}
		l := localcluster.Layout{Name: badName}
		if _, err := os.Stat(l.ControlPlaneNetns()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the control plane's namespace was created: %v", err)
		}
		if entries, _ := os.ReadDir(l.StateDir()); len(entries) > 1 {
			t.Errorf("more than the logs left in %s: %v", l.StateDir(), entries)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	_ = localcluster.Down(ctx, log, name)
	start := time.Now()
	s, err := localcluster.Up(ctx, log, opts)
	if err != nil {
		t.Fatal(err)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			if err := localcluster.Down(context.Background(), log, name); err != nil {
				t.Errorf("down %s: %v", name, err)
			}
		}
	})
	t.Logf("dev up: up in %s", time.Since(start).Round(time.Second))
	l := s.Layout()
	k := &kube{t: t, kubeconfig: l.Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	// helm runs the pinned helm as a user does: `membrane dev helm`.
	helm := func(t *testing.T, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"),
			append([]string{"dev", "helm", "--name", name, "--tools-dir", shared.toolsDir, "--"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("membrane dev helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}

	t.Run("release and workloads", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		var releases []struct{ Name, Namespace, Status, Chart string }
		mustJSON(t, helm(t, "list", "-n", "kube-system", "-o", "json"), &releases)
		if len(releases) != 1 || releases[0].Name != "membrane" || releases[0].Status != "deployed" {
			t.Errorf("helm list -n kube-system: %+v, want release membrane deployed", releases)
		}
		checkWorkloads(t, k, len(s.Nodes))
		// The agents are pods of the chart's DaemonSet, not host processes.
		for _, p := range s.Processes {
			if strings.HasPrefix(p.Name, "membrane-agent") || strings.HasPrefix(p.Name, "membrane-operator") {
				t.Errorf("%s runs as a host process", p.Name)
			}
		}
		status := k.membrane("status")
		for _, n := range s.Nodes {
			if !strings.Contains(status, n.Name+" ") || !strings.Contains(lineOf(status, n.Name), "ready") {
				t.Errorf("membrane status has no ready agent on %s:\n%s", n.Name, status)
			}
		}
		// One operator pod is elected, with its in-cluster credentials.
		var lease coordinationv1.Lease
		mustJSON(t, k.must("", "-n", "kube-system", "get", "lease", "membrane-operator", "-o", "json"), &lease)
		holder := ""
		if lease.Spec.HolderIdentity != nil {
			holder = *lease.Spec.HolderIdentity
		}
		elected := false
		for _, p := range k.pods("kube-system", "k8s-app=membrane-operator") {
			elected = elected || strings.HasPrefix(holder, p.Name+"_")
		}
		if !elected {
			t.Errorf("lease kube-system/membrane-operator is held by %q, no operator pod", holder)
		}
	})

	t.Run("Service and NetworkPolicy", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		const ns = "helm"
		backends, frontends := checkServiceAndPolicy(t, k, ns)
		endpoints := k.membrane("endpoint", "list")
		for _, p := range append(backends, frontends...) {
			if !strings.Contains(endpoints, ns+"/"+p.Name) && !strings.Contains(endpoints, p.Name) {
				t.Errorf("membrane endpoint list has no %s:\n%s", p.Name, endpoints)
			}
		}
	})

	t.Run("L7 policy through Envoy", func(t *testing.T) {
		checkL7(t, &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}, s.Nodes)
	})

	t.Run("helm upgrade turns WireGuard on", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		const ns = "helm-wg"
		backends, frontends := deployTutorial(t, k, ns)
		checkSpread(t, backends, frontends)
		workloads := podUIDs(t, k, ns)
		// A value the schema refuses changes nothing.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		_, err := localcluster.Helm(ctx, shared.toolsDir, name, "upgrade", "--set", "encryption.enabled=true,encryption.type=ipsec")
		cancel()
		if err == nil || !strings.Contains(err.Error(), "/encryption/type") {
			t.Errorf("helm upgrade --set encryption.type=ipsec: %v, want the schema's refusal naming /encryption/type", err)
		}
		start := time.Now()
		helm(t, "upgrade", "--set", "encryption.enabled=true,encryption.type=wireguard")
		k.must("", "-n", "kube-system", "rollout", "status", "daemonset/membrane-agent", "--timeout=180s")
		checkWorkloads(t, k, len(s.Nodes))
		// The node Envoys ran on through the agents' restart: each new agent
		// finds its Envoy running what it publishes. `status --wait` returns
		// once every agent is ready and its Envoy in sync.
		waitStart := time.Now()
		status := k.membrane("status", "--wait", "--wait-duration", "60s")
		t.Logf("membrane status --wait returned after %s:\n%s", time.Since(waitStart).Round(time.Millisecond), status)
		for _, n := range s.Nodes {
			if line := lineOf(status, n.Name); !strings.Contains(line, " ready ") || !strings.Contains(line, "in sync") {
				t.Errorf("after status --wait, %s is not ready and in sync: %q", n.Name, line)
			}
		}
		w := &wgEnv{t: t, k: k, s: s, log: log}
		// Traffic between the nodes starts the handshakes.
		expectReach(t, k, ns, podNames(frontends), backendURLs(backends)[1:], true)
		w.converged(len(s.Nodes))
		t.Logf("helm upgrade to WireGuard converged in %s", time.Since(start).Round(time.Second))
		if got := podUIDs(t, k, ns); fmt.Sprint(got) != fmt.Sprint(workloads) {
			t.Errorf("workload pods changed across the upgrade:\nbefore %v\nafter  %v", workloads, got)
		}
		var pods corev1.PodList
		mustJSON(t, k.must("", "-n", ns, "get", "pods", "-o", "json"), &pods)
		for _, p := range pods.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.RestartCount != 0 {
					t.Errorf("pod %s container %s restarted %d times", p.Name, cs.Name, cs.RestartCount)
				}
			}
		}
		var releases []struct {
			Revision int
			Status   string
		}
		mustJSON(t, helm(t, "history", "membrane", "-n", "kube-system", "-o", "json"), &releases)
		if len(releases) != 2 || releases[1].Status != "deployed" {
			t.Errorf("helm history: %+v, want revision 2 deployed", releases)
		}
	})

	t.Run("pod metadata and the operator's disruption budget", func(t *testing.T) {
		k := &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}
		for _, c := range []struct{ app, annotation, label string }{
			{"membrane-agent", "network", ""}, {"membrane-envoy", "network", ""}, {"membrane-operator", "", "network"},
		} {
			for _, p := range k.pods("kube-system", "k8s-app="+c.app) {
				if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != helmPullSecret {
					t.Errorf("pod %s: imagePullSecrets %v, want %s", p.Name, p.Spec.ImagePullSecrets, helmPullSecret)
				}
				if got := p.Annotations["example.com/team"]; got != c.annotation {
					t.Errorf("pod %s: annotation example.com/team %q, want %q", p.Name, got, c.annotation)
				}
				if got := p.Labels["team"]; got != c.label {
					t.Errorf("pod %s: label team %q, want %q", p.Name, got, c.label)
				}
			}
		}
		// The real disruption controller counts the operator replicas
		// (one per node) and allows one eviction.
		var pdb policyv1.PodDisruptionBudget
		eventually(t, time.Minute, "PodDisruptionBudget membrane-operator allows one disruption of 2 pods", func() error {
			pdb = policyv1.PodDisruptionBudget{}
			if err := getJSON(k, &pdb, "-n", "kube-system", "get", "pdb", "membrane-operator"); err != nil {
				return err
			}
			if st := pdb.Status; st.ExpectedPods != 2 || st.CurrentHealthy != 2 || st.DisruptionsAllowed != 1 {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
		ops := k.pods("kube-system", "k8s-app=membrane-operator")
		if len(ops) != 2 {
			t.Fatalf("%d operator pods, want 2", len(ops))
		}
		evict := func(pod string) (string, error) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			return k.run(ctx, fmt.Sprintf(`{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":%q,"namespace":"kube-system"}}`, pod),
				"create", "--raw", "/api/v1/namespaces/kube-system/pods/"+pod+"/eviction", "-f", "-")
		}
		if out, err := evict(ops[0].Name); err != nil {
			t.Fatalf("evict %s: %v: %s", ops[0].Name, err, out)
		}
		// Until its replacement is ready, the budget refuses the other.
		out, err := evict(ops[1].Name)
		if err == nil || !strings.Contains(out+err.Error(), "disruption budget") {
			t.Errorf("evict %s right after %s: %v: %s; want the disruption budget's refusal", ops[1].Name, ops[0].Name, err, out)
		} else {
			t.Logf("evict %s right after %s: %v", ops[1].Name, ops[0].Name, err)
		}
		k.must("", "-n", "kube-system", "rollout", "status", "deployment/membrane-operator", "--timeout=120s")
		checkWorkloads(t, k, len(s.Nodes))
	})

	t.Run("dev down removes the agents' pods, pins and cgroups", func(t *testing.T) {
		agentPIDs := cgroupPIDs(t, filepath.Join(l.CgroupDir(s.CgroupRoot)), "membrane-agent")
		if len(agentPIDs) != len(s.Nodes) {
			t.Errorf("%d membrane-agent processes in the cluster's cgroups, want %d", len(agentPIDs), len(s.Nodes))
		}
		pins, _ := filepath.Glob(filepath.Join(l.BPFDir(), "*", "membrane", "links", "*"))
		if len(pins) == 0 {
			t.Errorf("no pinned links below %s: the agents pin elsewhere", l.BPFDir())
		}
		if err := localcluster.Down(t.Context(), log, name); err != nil {
			t.Fatal(err)
		}
		downed = true
		for _, pid := range agentPIDs {
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmd), "membrane-agent") {
				t.Errorf("membrane-agent (pid %d) still runs", pid)
			}
		}
		for _, dir := range []string{l.BPFDir(), l.CgroupDir(s.CgroupRoot), l.StateDir(), l.RunDir()} {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left: %v", dir, err)
			}
		}
	})
}

// helmPullSecret is the image pull secret TestHelmInstall gives the chart.
const helmPullSecret = "membrane-registry"

// checkWorkloads checks the chart's workloads: the agent DaemonSet with a
// ready pod on each of nodes, the Envoy DaemonSet and the operator
// Deployment available.
func checkWorkloads(t *testing.T, k *kube, nodes int) {
	t.Helper()
	var dss appsv1.DaemonSetList
	mustJSON(t, k.must("", "-n", "kube-system", "get", "ds", "-o", "json"), &dss)
	found := map[string]bool{}
	for _, ds := range dss.Items {
		st, n := ds.Status, int32(nodes)
		found[ds.Name] = true
		if st.DesiredNumberScheduled != n || st.NumberReady != n || st.NumberAvailable != n {
			t.Errorf("daemonset %s: desired %d, ready %d, available %d; want %d", ds.Name, st.DesiredNumberScheduled, st.NumberReady, st.NumberAvailable, n)
		}
	}
	var deps appsv1.DeploymentList
	mustJSON(t, k.must("", "-n", "kube-system", "get", "deploy", "-o", "json"), &deps)
	for _, d := range deps.Items {
		found[d.Name] = true
		if d.Spec.Replicas == nil || d.Status.AvailableReplicas != *d.Spec.Replicas {
			t.Errorf("deployment %s: %d of %v available", d.Name, d.Status.AvailableReplicas, d.Spec.Replicas)
		}
	}
	for _, want := range []string{"membrane-agent", "membrane-envoy", "membrane-operator"} {
		if !found[want] {
			t.Errorf("no %s in kube-system", want)
		}
	}
}

// lineOf is the first line of text holding s.
func lineOf(text, s string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// podUIDs maps the pods of namespace ns to their UIDs.
func podUIDs(t *testing.T, k *kube, ns string) map[string]string {
	t.Helper()
	var list corev1.PodList
	mustJSON(t, k.must("", "-n", ns, "get", "pods", "-o", "json"), &list)
	out := map[string]string{}
	for _, p := range list.Items {
		out[p.Name] = string(p.UID)
	}
	return out
}

// cgroupPIDs lists the processes below the cgroup dir whose command is
// program.
func cgroupPIDs(t *testing.T, dir, program string) []int {
	t.Helper()
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil // gone meanwhile
		}
		for _, f := range strings.Fields(string(raw)) {
			pid, _ := strconv.Atoi(f)
			cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0]) == program {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

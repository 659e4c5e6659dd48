package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestNodeRunnerRestart: a node runner killed and started again adopts the
// pods that run on: no request to them fails, they keep their UIDs, IPs,
// processes, container IDs, start times, restart counts and readiness, and
// their logs and exec keep working. A pod deleted while the runner was down
// is torn down (processes, network namespace); a pod whose process died
// meanwhile is restarted.
func TestNodeRunnerRestart(t *testing.T) {
	k := cluster(t)
	if len(shared.cluster.Nodes) < 2 {
		t.Skip("needs two nodes")
	}
	const ns = "runner-restart"
	clientNode, node := shared.cluster.Nodes[0].Name, shared.cluster.Nodes[1].Name
	k.must(restartManifest(ns, clientNode, node), "apply", "-f", "-")
	t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--wait=false") })
	k.must("", "-n", ns, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s")

	l := shared.cluster.Layout()
	nodeCgroup := filepath.Join(l.CgroupDir(shared.cluster.CgroupRoot), node, "pods")
	netnsDir := filepath.Join(l.RunDir(), "netns", node)
	adopted := []string{"server", "ticker"}
	before := map[string]corev1.Pod{}
	procsBefore := map[string][]string{}
	for _, name := range append(adopted, "victim", "phoenix") {
		p := getPod(t, k, ns, name)
		before[name] = p
		procsBefore[name] = podProcesses(t, filepath.Join(nodeCgroup, string(p.UID)))
		if len(procsBefore[name]) == 0 {
			t.Fatalf("pod %s: no processes in its cgroup", name)
		}
	}
	clientIP := getPod(t, k, ns, "client").Status.PodIP
	serverIP := before["server"].Status.PodIP
	clusterIP := strings.TrimSpace(k.must("", "-n", ns, "get", "service", "server", "-o", "jsonpath={.spec.clusterIP}"))
	nodeReadySince := readyTransition(k.node(node).Status.Conditions)
	served := func() int { return strings.Count(k.must("", "-n", ns, "logs", "server"), clientIP+":") }
	servedBefore := served()

	// Watch the Node and the adopted pods for the whole run.
	var watchMu sync.Mutex
	var notReady []string
	watchCtx, stopWatch := context.WithCancel(t.Context())
	watchStart := time.Now()
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		for watchCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(watchCtx, 10*time.Second)
			out, err := k.run(ctx, "", "-n", ns, "get", "node/"+node, "pod/server", "pod/ticker", "-o", "json")
			cancel()
			var list struct{ Items []json.RawMessage }
			if err == nil && json.Unmarshal([]byte(out), &list) == nil {
				for _, raw := range list.Items {
					if msg := notReadyIn(raw); msg != "" {
						watchMu.Lock()
						notReady = append(notReady, time.Now().Format("15:04:05.000")+" "+msg)
						watchMu.Unlock()
					}
				}
			}
			select {
			case <-watchCtx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	defer func() { stopWatch(); watchWG.Wait() }()

	// 150 rounds, each a request to the server pod's IP and one to its
	// Service, 75 ms apart; bounded by 90 seconds.
	type result struct {
		out string
		err error
		end time.Time
	}
	loopDone := make(chan result, 1)
	go func() {
		script := fmt.Sprintf(`end=$(($(date +%%s)+90)); ok=0; failed=0; i=0
while [ $i -lt 150 ] && [ $(date +%%s) -lt $end ]; do
  for url in http://%s:8080 http://%s:8080; do
    if timeout 3 wget -q -O- $url >/dev/null 2>&1; then ok=$((ok+1)); else failed=$((failed+1)); echo "failed $url at $(date +%%T)"; fi
  done
  i=$((i+1)); sleep 0.075
done
echo ok=$ok failed=$failed`, serverIP, clusterIP)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		out, err := k.run(ctx, "", "-n", ns, "exec", "client", "--", "sh", "-c", script)
		loopDone <- result{out, err, time.Now()}
	}()
	time.Sleep(2 * time.Second)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	killed := time.Now()
	var downFor time.Duration
	_, err := localcluster.RestartWith(t.Context(), log, sharedName, "node-runner/"+node, localcluster.RestartOptions{
		Kill: true,
		WhileDown: func() error {
			defer func() { downFor = time.Since(killed) }()
			// While the runner is down: one pod is deleted for good, one
			// pod's process dies.
			if _, err := k.run(t.Context(), "", "-n", ns, "delete", "pod", "victim", "--grace-period=0", "--force"); err != nil {
				return err
			}
			pid, err := strconv.Atoi(strings.Fields(procsBefore["phoenix"][0])[0])
			if err != nil {
				return err
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return err
			}
			// Down for a while, as after a crash: the pods' output piles
			// up unread meanwhile.
			time.Sleep(time.Until(killed.Add(2 * time.Second)))
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	t.Cleanup(func() { logRunnerRestart(t, filepath.Join(l.LogDir(), "node-"+node+".log"), killed) })

	// The restarted runner serves logs and exec of the adopted pods.
	eventually(t, 60*time.Second, "logs of an adopted pod through the restarted runner", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := k.run(ctx, "", "-n", ns, "logs", "ticker", "--tail=1")
		return err
	})
	up := time.Now()
	out := k.must("", "-n", ns, "exec", "ticker", "--", "cat", "/etc/hostname")
	if strings.TrimSpace(out) != "ticker" {
		t.Errorf("exec in the adopted pod: %q", out)
	}

	r := <-loopDone
	if r.end.Before(up) {
		t.Fatalf("the request loop ended (%s) before the restarted runner served the kubelet API (%s): it proves nothing", r.end, up)
	}
	var ok, failed int
	last := r.out[strings.LastIndex(strings.TrimSpace(r.out), "\n")+1:]
	if _, err := fmt.Sscanf(strings.TrimSpace(last), "ok=%d failed=%d", &ok, &failed); r.err != nil || err != nil {
		t.Fatalf("request loop: %v: %s", r.err, r.out)
	}
	t.Logf("node runner on %s killed and started again (down %s, kubelet API back %s after the kill); requests from %s to pod %s and Service %s: %d ok, %d failed",
		node, downFor.Round(time.Millisecond), up.Sub(killed).Round(time.Millisecond), clientNode, serverIP, clusterIP, ok, failed)
	if failed != 0 || ok != 300 {
		t.Errorf("request loop across the node runner restart: %d ok, %d failed (want 300, 0):\n%s", ok, failed, r.out)
	}

	// Adopted pods: the same in the API and on the node.
	for _, name := range adopted {
		b, a := before[name], getPod(t, k, ns, name)
		if a.UID != b.UID || a.Status.PodIP != b.Status.PodIP {
			t.Errorf("pod %s: uid %s ip %s, was %s %s", name, a.UID, a.Status.PodIP, b.UID, b.Status.PodIP)
		}
		if got, want := containerFacts(a), containerFacts(b); got != want {
			t.Errorf("pod %s containers: %s, was %s", name, got, want)
		}
		if got, want := readyTransition(a.Status.Conditions), readyTransition(b.Status.Conditions); got != want || got == "" {
			t.Errorf("pod %s Ready since %q, was %q", name, got, want)
		}
		procs := podProcesses(t, filepath.Join(nodeCgroup, string(a.UID)))
		if !slices.Equal(procs, procsBefore[name]) {
			t.Errorf("pod %s processes (pid start-time): %v, were %v", name, procs, procsBefore[name])
		}
		t.Logf("pod %s adopted: uid %s, ip %s, %s, processes %v", name, a.UID, a.Status.PodIP, containerFacts(a), procs)
	}

	// The ticker's output while no runner read it is in its log, in order.
	ticks := tickNumbers(k.must("", "-n", ns, "logs", "ticker"))
	if len(ticks) == 0 || ticks[0] != 1 {
		t.Fatalf("ticker log starts at %v", ticks[:min(len(ticks), 3)])
	}
	for i, n := range ticks {
		if n != i+1 {
			t.Fatalf("ticker log: tick %d follows tick %d: output was lost or repeated across the restart", n, ticks[i-1])
		}
	}
	servedAfter := served()
	t.Logf("ticker log: ticks 1..%d without a gap; server logged %d of the %d requests (before: %d)", len(ticks), servedAfter-servedBefore, ok, servedBefore)
	// A line read but not yet written when the runner was killed may be lost.
	if d := ok - (servedAfter - servedBefore); d < 0 || d > 1 {
		t.Errorf("server log holds %d request lines more than were served", -d)
	}

	// The pod deleted while the runner was down is torn down.
	victim := before["victim"]
	eventually(t, 30*time.Second, "deleted pod torn down", func() error {
		if _, err := os.Stat(filepath.Join(netnsDir, string(victim.UID))); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("network namespace still there: %v", err)
		}
		if _, err := os.Stat(filepath.Join(nodeCgroup, string(victim.UID))); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroup still there: %v", err)
		}
		for _, p := range procsBefore["victim"] {
			if processAlive(p) {
				return fmt.Errorf("process %s still runs", p)
			}
		}
		return nil
	})

	// The pod whose process died meanwhile runs again, restarted once.
	eventually(t, 60*time.Second, "phoenix restarted and Ready", func() error {
		p := getPod(t, k, ns, "phoenix")
		if p.UID != before["phoenix"].UID || len(p.Status.ContainerStatuses) != 1 {
			return fmt.Errorf("pod %s %+v", p.UID, p.Status.ContainerStatuses)
		}
		cs := p.Status.ContainerStatuses[0]
		if cs.RestartCount != 1 || !cs.Ready || cs.LastTerminationState.Terminated == nil {
			return fmt.Errorf("restarts %d ready %t last %+v", cs.RestartCount, cs.Ready, cs.LastTerminationState)
		}
		return nil
	})
	cs := getPod(t, k, ns, "phoenix").Status.ContainerStatuses[0]
	t.Logf("pod phoenix, killed while the runner was down: restarted (count %d, last state %s exit %d), same IP %s",
		cs.RestartCount, cs.LastTerminationState.Terminated.Reason, cs.LastTerminationState.Terminated.ExitCode, before["phoenix"].Status.PodIP)

	stopWatch()
	watchWG.Wait()
	if got := readyTransition(k.node(node).Status.Conditions); got != nodeReadySince {
		t.Errorf("node %s Ready since %q, was %q", node, got, nodeReadySince)
	}
	watchMu.Lock()
	defer watchMu.Unlock()
	if len(notReady) > 0 {
		t.Errorf("not Ready during the restart (%d observations): %v", len(notReady), notReady[:min(len(notReady), 5)])
	}
	t.Logf("node %s and the adopted pods stayed Ready (polled every 300 ms from %s before the kill until %s after the start)",
		node, killed.Sub(watchStart).Round(time.Second), time.Since(restarted).Round(time.Second))
}

func restartManifest(ns, clientNode, node string) string {
	pin := func(n string) string { return "  nodeSelector: {kubernetes.io/hostname: " + n + "}\n" }
	sleeper := func(name string) string {
		return `---
apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
` + pin(node) + `  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
`
	}
	return `apiVersion: v1
kind: Namespace
metadata: {name: ` + ns + `}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: ` + ns + `, labels: {app: server}}
spec:
` + pin(node) + `  containers:
  - name: http-echo
    image: hashicorp/http-echo:1.0.0
    args: ["-text=hello", "-listen=:8080"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
    livenessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1, failureThreshold: 3}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: ` + ns + `}
spec:
  selector: {app: server}
  ports: [{port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: ` + ns + `}
spec:
` + pin(node) + `  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "trap 'exit 0' TERM; i=1; while [ $i -le 100000 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; sleep 3600"]
` + sleeper("victim") + sleeper("phoenix") + `---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ` + ns + `}
spec:
` + pin(clientNode) + `  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
`
}

// podProcesses lists "pid start-time" of the containers' init processes
// (pid 1 of their PID namespaces) in a pod's cgroup.
func podProcesses(t *testing.T, cgroup string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(cgroup, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range strings.Fields(string(raw)) {
		status, err := os.ReadFile("/proc/" + f + "/status")
		if err != nil {
			continue
		}
		init := false
		for _, line := range strings.Split(string(status), "\n") {
			if ids, ok := strings.CutPrefix(line, "NSpid:"); ok {
				ids := strings.Fields(ids)
				init = len(ids) > 1 && ids[len(ids)-1] == "1"
			}
		}
		stat, err := os.ReadFile("/proc/" + f + "/stat")
		if err != nil || !init {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		out = append(out, f+" "+fields[19])
	}
	slices.Sort(out)
	return out
}

// processAlive tells whether "pid start-time" still runs.
func processAlive(p string) bool {
	pid, start, _ := strings.Cut(p, " ")
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return fields[19] == start && fields[0] != "Z"
}

// containerFacts sums up what must not change when a pod is adopted.
func containerFacts(p corev1.Pod) string {
	var parts []string
	for _, cs := range p.Status.ContainerStatuses {
		started := ""
		if cs.State.Running != nil {
			started = cs.State.Running.StartedAt.UTC().Format(time.RFC3339)
		}
		parts = append(parts, fmt.Sprintf("%s id=%s started=%s restarts=%d ready=%t", cs.Name, cs.ContainerID, started, cs.RestartCount, cs.Ready))
	}
	return strings.Join(parts, "; ")
}

// readyTransition is when the Ready condition last became True ("" if it
// is not True).
func readyTransition[C corev1.PodCondition | corev1.NodeCondition](conds []C) string {
	for _, c := range conds {
		switch c := any(c).(type) {
		case corev1.PodCondition:
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return c.LastTransitionTime.UTC().Format(time.RFC3339)
			}
		case corev1.NodeCondition:
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return c.LastTransitionTime.UTC().Format(time.RFC3339)
			}
		}
	}
	return ""
}

// notReadyIn describes a Node or Pod (as JSON) that is not Ready; "" if it is.
func notReadyIn(raw json.RawMessage) string {
	var obj struct {
		Kind     string
		Metadata struct{ Name string }
		Status   struct {
			Conditions []struct{ Type, Status string }
		}
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "undecodable object"
	}
	for _, c := range obj.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status == "True" {
				return ""
			}
			return fmt.Sprintf("%s %s Ready=%s", obj.Kind, obj.Metadata.Name, c.Status)
		}
	}
	return fmt.Sprintf("%s %s has no Ready condition", obj.Kind, obj.Metadata.Name)
}

// tickNumbers returns the numbers of the "tick N" lines of a log.
func tickNumbers(log string) []int {
	var out []int
	for _, line := range strings.Split(log, "\n") {
		if n, ok := strings.CutPrefix(line, "tick "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

// logRunnerRestart shows what the restarted node runner said about the pods
// it found.
func logRunnerRestart(t *testing.T, path string, since time.Time) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Logf("node runner log: %v", err)
		return
	}
	for _, line := range strings.Split(string(raw), "\n") {
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(since) {
			continue
		}
		for _, what := range []string{"adopted", "tearing down", "killing", "container exited", "container started", "level=WARN", "level=ERROR"} {
			if strings.Contains(line, what) {
				t.Logf("node runner: %s", line)
				break
			}
		}
	}
}

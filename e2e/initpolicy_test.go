package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// probeScript tries url every 100 ms from the container's first moment,
// printing REACHED <try> or FAILED <try> <error> for each, then DONE, then
// sleeps.
func probeScript(url string, tries int) string {
	return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); if out=$(timeout 1 wget -q -O- %s 2>&1); then echo "REACHED $i"; else echo "FAILED $i $out"; fi; sleep 0.1; done; echo DONE; sleep 3600`, tries, url)
}

// probeLog waits until pod's probe loop is done and returns its log.
func probeLog(t *testing.T, k *kube, ns, pod string) string {
	t.Helper()
	var out string
	eventually(t, 90*time.Second, pod+" probe loop done", func() error {
		var err error
		out, err = k.run(t.Context(), "", "-n", ns, "logs", pod)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "DONE") {
			return fmt.Errorf("not done: %q", out)
		}
		return nil
	})
	return out
}

// TestNewPodPolicedFromStart: a pod that a default-deny policy selects
// cannot reach a forbidden destination even in its first moments, while a
// pod no policy selects gets through as soon as the agent knows it. A pod
// whose identity does not exist yet (the operator is away) stays in the
// init identity, whose drops say "Policy not yet known", until it exists.
func TestNewPodPolicedFromStart(t *testing.T) {
	k := cluster(t)
	const ns = "initpolicy"
	backends, _ := deployTutorial(t, k, ns)
	target := "http://" + backends[0].Status.PodIP + ":8080/"
	k.must(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: probes-isolated, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: probe}}
  policyTypes: [Ingress, Egress]
`, "apply", "-f", "-")

	// Each probe pod has labels no pod had before: its identity does not
	// exist when it starts. They start together, a few rounds.
	const rounds, perRound, tries = 2, 3, 25
	for r := range rounds {
		var pods []string
		for i := range perRound {
			name := fmt.Sprintf("probe-%d-%d", r, i)
			k.must("", "-n", ns, "run", name, "--image=busybox:1.36", "--restart=Never",
				"--labels=app=probe,probe="+name, "--", "sh", "-c", probeScript(target, tries))
			pods = append(pods, name)
		}
		free := fmt.Sprintf("free-%d", r)
		k.must("", "-n", ns, "run", free, "--image=busybox:1.36", "--restart=Never",
			"--labels=app=free,free="+free, "--", "sh", "-c", probeScript(target, tries))
		for _, p := range pods {
			out := probeLog(t, k, ns, p)
			if strings.Contains(out, "REACHED") {
				t.Errorf("round %d: %s, selected by a default-deny policy, reached %s:\n%s", r, p, target, out)
			}
		}
		// A pod no policy selects gets through once the agent programmed it.
		out := probeLog(t, k, ns, free)
		first := -1
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "REACHED" {
				first, _ = strconv.Atoi(f[1])
				break
			}
		}
		if first < 0 {
			t.Errorf("round %d: %s, selected by no policy, never reached %s:\n%s", r, free, target, out)
		} else {
			t.Logf("round %d: %s (no policy) first reached the backend on try %d (tries 100 ms apart, 1 s timeout each)", r, free, first)
		}
	}
	if t.Failed() {
		return
	}

	// Without the operator no new identity is allocated: pods with new
	// labels stay in the init identity, selected by a policy or not, and
	// their drops say why. Once it is back, the real policy applies.
	k.must("", "-n", "kube-system", "scale", "deployment/membrane-operator", "--replicas=0")
	restore := func() {
		k.must("", "-n", "kube-system", "scale", "deployment/membrane-operator", "--replicas=1")
		k.must("", "-n", "kube-system", "rollout", "status", "deployment/membrane-operator", "--timeout=90s")
	}
	restored := false
	t.Cleanup(func() {
		if !restored {
			restore()
		}
	})
	eventually(t, 60*time.Second, "operator gone", func() error {
		if ps := k.pods("kube-system", "k8s-app=membrane-operator"); len(ps) > 0 {
			return fmt.Errorf("%d operator pod(s) left", len(ps))
		}
		return nil
	})
	const heldTries = 30
	k.must("", "-n", ns, "run", "probe-held", "--image=busybox:1.36", "--restart=Never",
		"--labels=app=probe,probe=held", "--", "sh", "-c", probeScript(target, heldTries))
	k.must("", "-n", ns, "run", "free-held", "--image=busybox:1.36", "--restart=Never",
		"--labels=app=free,free=held", "--", "sh", "-c", probeScript(target, heldTries))
	for _, p := range []string{"probe-held", "free-held"} {
		if out := probeLog(t, k, ns, p); strings.Contains(out, "REACHED") {
			t.Errorf("%s reached %s before its identity existed:\n%s", p, target, out)
		}
		expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/" + p, "--port", "8080"}, "Policy not yet known (init identity) DROPPED")
	}
	restore()
	restored = true
	start := time.Now()
	eventually(t, policyTimeout, "free-held reaches the backend once its identity exists", func() error { return fetch(k, ns, "free-held", target) })
	t.Logf("free-held reached the backend %s after the operator was back", time.Since(start).Round(100*time.Millisecond))
	if err := fetch(k, ns, "probe-held", target); err == nil {
		t.Error("probe-held reaches the backend with its identity: its policy denies it")
	}
	expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/probe-held", "--port", "8080"}, "Policy denied DROPPED")
}

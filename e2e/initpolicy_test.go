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
// cannot reach a forbidden destination even in its first moments (before
// the agent knows its identity: its endpoint starts with the init identity,
// which drops, and the drops are reported), while a pod no policy selects
// gets through as soon as the agent knows it.
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
	// The early drops are reported with their reason.
	// (the pod's address is not known to the agent yet then: no pod name)
	expectFlow(t, k, []string{"--verdict", "DROPPED", "--port", "8080"}, backends[0].Status.PodIP+":8080", "Policy not yet known")
}

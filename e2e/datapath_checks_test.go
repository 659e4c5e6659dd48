package e2e

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// checkServiceAndPolicy proves the L3/L4 datapath of a cluster of its own:
// in namespace ns, the tutorial's frontends and another pod reach the
// backend Service; under a NetworkPolicy that admits only the frontends,
// the other pod is dropped (and `membrane observe` says so) while the
// frontends still reach the Service and every backend.
func checkServiceAndPolicy(t *testing.T, k *kube, ns string) (backends, frontends []corev1.Pod) {
	t.Helper()
	backends, frontends = deployTutorial(t, k, ns)
	checkSpread(t, backends, frontends)
	other := otherPod(t, k, ns, "other", "other")
	urls := backendURLs(backends) // the Service's name first, then each backend
	fronts := podNames(frontends)
	expectReach(t, k, ns, append(fronts, other.Name), urls[:1], true)

	k.must(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{protocol: TCP, port: http}]
`, "apply", "-f", "-")
	expectReach(t, k, ns, []string{other.Name}, urls, false)
	expectReach(t, k, ns, fronts, urls, true)
	expectFlow(t, k, []string{"--verdict", "DROPPED", "--from-pod", ns + "/other"}, ns+"/other", "Policy denied")
	return backends, frontends
}

// checkL7 proves the L7 path of a cluster of its own: an HTTP rule gives
// 200 and 403 through the node Envoys on the same node, across nodes and
// through the Service, and a pod the rule does not name gets no answer.
func checkL7(t *testing.T, k *kube, nodes []localcluster.NodeState) {
	t.Helper()
	p := deployL7On(t, k, nodes)
	k.must(paymentPolicy(`{method: POST, path: "/api/v1/payments$"}`), "apply", "-f", "-")
	for _, url := range paymentURLs(p, "/api/v1/payments") { // same node, other node, Service
		expectCode(t, k, p.checkouts[0], "GET", url+"/P123", "200")
		expectCode(t, k, p.checkouts[0], "DELETE", url+"/123", "403")
	}
	expectCode(t, k, p.other, "GET", paymentURLs(p, "/api/v1/payments/P123")[0], "000")
}

// ownCluster brings up a cluster of the test's own beside the shared one
// (removing a leftover of the same name first) and removes it when the test
// ends; o needs no ToolsDir or BinDir.
func ownCluster(t *testing.T, o localcluster.Options) *localcluster.State {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.ToolsDir, o.BinDir = shared.toolsDir, shared.binDir
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	_ = localcluster.Down(ctx, log, o.Name)
	s, err := localcluster.Up(ctx, log, o)
	t.Cleanup(func() {
		if err := localcluster.Down(context.Background(), log, o.Name); err != nil {
			t.Errorf("down %s: %v", o.Name, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

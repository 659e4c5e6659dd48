package e2e

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// deployTutorial applies the tutorial pair into namespace ns and waits for it.
func deployTutorial(t *testing.T, k *kube, ns string) (backends, frontends []corev1.Pod) {
	t.Helper()
	raw, err := os.ReadFile("testdata/tutorial.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.NewReplacer("namespace: tutorial", "namespace: "+ns, "name: tutorial", "name: "+ns).Replace(string(raw))
	k.must(manifest, "apply", "-f", "-")
	t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--wait=false") })
	k.must("", "-n", ns, "rollout", "status", "deployment/backend", "--timeout=90s")
	k.must("", "-n", ns, "rollout", "status", "deployment/frontend", "--timeout=90s")
	return k.pods(ns, "app=backend"), k.pods(ns, "app=frontend")
}

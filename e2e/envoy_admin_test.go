package e2e

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// envoyAdmin GETs path from the admin interface of the node Envoy in the
// network namespace netns (a node's).
func envoyAdmin(t *testing.T, netns, path string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "nsenter", "--net="+netns, "--",
		"curl", "-s", "-m", "5", "http://127.0.0.1:9901"+path).CombinedOutput()
	if err != nil {
		t.Fatalf("envoy %s: %v: %s", path, err, out)
	}
	return string(out)
}

// envoyStat reads the counter or gauge name of the node Envoy in netns.
func envoyStat(t *testing.T, netns, name string) int {
	t.Helper()
	n, ok := envoyStatIf(t, netns, name)
	if !ok {
		t.Fatalf("envoy stat %s: the node Envoy in %s has no such statistic", name, netns)
	}
	return n
}

// envoyStatIf reads the counter or gauge name of the node Envoy in netns,
// false if Envoy has no such statistic (yet: a cluster's statistics appear
// with the cluster).
func envoyStatIf(t *testing.T, netns, name string) (int, bool) {
	t.Helper()
	out := strings.TrimSpace(envoyAdmin(t, netns, "/stats?filter=^"+strings.ReplaceAll(name, ".", "%5C.")+"$"))
	if out == "" {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out, name+":")))
	if err != nil {
		t.Fatalf("envoy stat %s: %q: %v", name, out, err)
	}
	return n, true
}

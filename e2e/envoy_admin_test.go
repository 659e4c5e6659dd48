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
	out := strings.TrimSpace(envoyAdmin(t, netns, "/stats?filter=^"+strings.ReplaceAll(name, ".", "%5C.")+"$"))
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out, name+":")))
	if err != nil {
		t.Fatalf("envoy stat %s: %q: %v", name, out, err)
	}
	return n
}

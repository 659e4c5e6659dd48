package ipcache

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStageDependencies keeps the agent's policy stages apart: none knows
// Kubernetes (only mesh/k8s does); the pure ones (endpoint discovery, the
// ipcache, the L7 translation) know no kernel either, only their seams do
// (mesh/endpoint/hostlinks, mesh/datapath).
func TestStageDependencies(t *testing.T) {
	kube := []string{"k8s.io/", "sigs.k8s.io/"}
	kernel := []string{"github.com/cilium/ebpf", "github.com/vishvananda/netlink"}
	const m = "github.com/membrane-mesh/membrane/"
	for _, c := range []struct {
		pkg       string
		forbidden []string
	}{
		{m + "mesh/endpoint", append(kernel, kube...)},
		{m + "mesh/ipcache", append(kernel, kube...)},
		{m + "xds/l7", append(kernel, kube...)},
		{m + "mesh/endpoint/hostlinks", kube},
		{m + "mesh/datapath", kube},
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", c.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", c.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range c.forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", c.pkg, dep)
				}
			}
		}
	}
}

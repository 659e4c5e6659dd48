package flow

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesImports keeps the flow packages free of Kubernetes
// packages: only mesh/k8s (the watch layer) and cmd/ know them.
func TestNoKubernetesImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}",
		"github.com/membrane-mesh/membrane/mesh/flow",
		"github.com/membrane-mesh/membrane/mesh/flow/printer").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/") {
			t.Errorf("mesh/flow depends on %s", dep)
		}
	}
}

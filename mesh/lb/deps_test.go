package lb

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesImports keeps the model and the translator free of
// Kubernetes packages: only mesh/k8s (the watch layer) and cmd/ know them.
func TestNoKubernetesImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}",
		"github.com/membrane-mesh/membrane/mesh/model",
		"github.com/membrane-mesh/membrane/mesh/lb").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/") {
			t.Errorf("mesh/model or mesh/lb depends on %s", dep)
		}
	}
}

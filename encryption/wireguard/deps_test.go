package wireguard

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesImports keeps the WireGuard package free of Kubernetes:
// the watch layer (mesh/k8s) converts Nodes into Node.
func TestNoKubernetesImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/membrane-mesh/membrane/encryption/wireguard").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/") {
			t.Errorf("encryption/wireguard depends on %s", dep)
		}
	}
}

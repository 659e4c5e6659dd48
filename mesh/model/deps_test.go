package model

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStandardLibraryOnly keeps the shared vocabulary packages importable
// from everywhere (the datapath packages, the pure translators, the CLI):
// mesh/model and mesh/labels depend on the standard library only.
func TestStandardLibraryOnly(t *testing.T) {
	for _, pkg := range []string{
		"github.com/membrane-mesh/membrane/mesh/model",
		"github.com/membrane-mesh/membrane/mesh/labels",
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			first, _, _ := strings.Cut(dep, "/")
			if dep != pkg && strings.Contains(first, ".") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

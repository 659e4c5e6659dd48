package policy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the resolver pure: no Kubernetes packages (only
// mesh/policy/convert knows them) and not the datapath's (cilium/ebpf), and
// the converters away from client-go and the controller runtime.
func TestDependencies(t *testing.T) {
	for _, c := range []struct {
		pkg       string
		forbidden []string
	}{
		{"github.com/membrane-mesh/membrane/mesh/policy", []string{"k8s.io/", "sigs.k8s.io/", "github.com/cilium/ebpf"}},
		{"github.com/membrane-mesh/membrane/mesh/policy/convert", []string{"k8s.io/client-go", "sigs.k8s.io/controller-runtime", "github.com/cilium/ebpf"}},
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", c.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
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

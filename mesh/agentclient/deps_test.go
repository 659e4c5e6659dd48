package agentclient

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLISafe keeps the client free of datapath code: the CLI imports it.
func TestCLISafe(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/membrane-mesh/membrane/mesh/agentclient").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/cilium/ebpf", "github.com/envoyproxy/go-control-plane", "golang.zx2c4.com/", "github.com/membrane-mesh/membrane/mesh/agent", "github.com/membrane-mesh/membrane/bpf", "github.com/membrane-mesh/membrane/encryption"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("mesh/agentclient depends on %s", dep)
			}
		}
	}
}

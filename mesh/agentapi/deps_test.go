package agentapi

import (
	"os/exec"
	"strings"
	"testing"
)

// datapathModules are the module paths of the datapath, proxy and
// WireGuard code the CLI and this package must not link.
var datapathModules = []string{
	"github.com/cilium/ebpf",
	"github.com/envoyproxy/go-control-plane",
	"golang.zx2c4.com/wireguard",
	"github.com/vishvananda/netlink",
}

// TestNoDatapathImports keeps the API types and the CLI free of the
// datapath: a CLI build links none of it.
func TestNoDatapathImports(t *testing.T) {
	for _, pkg := range []string{
		"github.com/membrane-mesh/membrane/mesh/agentapi",
		"github.com/membrane-mesh/membrane/cmd/membrane",
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list %s: no dependencies listed:\n%s", pkg, out)
		}
		for _, dep := range deps {
			for _, m := range datapathModules {
				if dep == m || strings.HasPrefix(dep, m+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}

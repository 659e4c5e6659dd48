package lb

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/mesh/model"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// translateInput is a golden case: the cluster as one node sees it.
type translateInput struct {
	Self     string                `json:"self"`
	Nodes    []model.Node          `json:"nodes"`
	Services []model.Service       `json:"services"`
	Slices   []model.EndpointSlice `json:"endpointSlices"`
}

type translateOutput struct {
	Entries  []Entry  `json:"entries"`
	Problems []string `json:"problems,omitempty"`
}

// TestEntriesGolden translates testdata/<case>.in.yaml and compares the
// result with <case>.out.yaml (go test ./mesh/lb -update rewrites them).
func TestEntriesGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var input translateInput
			if err := yaml.UnmarshalStrict(raw, &input); err != nil {
				t.Fatalf("parse %s: %v", in, err)
			}
			var got translateOutput
			for _, svc := range input.Services {
				var eps []model.EndpointSlice
				for _, s := range input.Slices {
					if s.Service == svc.ID {
						eps = append(eps, s)
					}
				}
				entries, problems := Entries(svc, eps, input.Nodes, input.Self)
				got.Entries = append(got.Entries, entries...)
				for _, p := range problems {
					got.Problems = append(got.Problems, p.Error())
				}
			}
			outPath := filepath.Join("testdata", name+".out.yaml")
			if *update {
				b, err := yaml.Marshal(got)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(outPath, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantRaw, err := os.ReadFile(outPath)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			var want translateOutput
			if err := yaml.UnmarshalStrict(wantRaw, &want); err != nil {
				t.Fatalf("parse %s: %v", outPath, err)
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("%s (-want +got):\n%s", name, diff)
			}
		})
	}
}

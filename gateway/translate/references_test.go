package translate

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// TestReferencesSuffice translates every golden input again with only the
// Secrets and ConfigMaps BuildWithReferences names: the IR and every status must
// stay the same (what the node agents, which read only the copies of
// these, serve is what the operator reports on).
func TestReferencesSuffice(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			_, _, refs := BuildWithReferences(c.In)
			secrets, cms := map[types.NamespacedName]bool{}, map[types.NamespacedName]bool{}
			for _, nn := range refs.Secrets {
				secrets[nn] = true
			}
			for _, nn := range refs.ConfigMaps {
				cms[nn] = true
			}
			in := c.In
			in.Secrets, in.ConfigMaps = nil, nil
			for _, s := range c.In.Secrets {
				if secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] {
					in.Secrets = append(in.Secrets, s)
				}
			}
			for _, cm := range c.In.ConfigMaps {
				if cms[types.NamespacedName{Namespace: cm.Namespace, Name: cm.Name}] {
					in.ConfigMaps = append(in.ConfigMaps, cm)
				}
			}
			wantIR, wantSt := Build(c.In)
			gotIR, gotSt := Build(in)
			if d := cmp.Diff(wantIR, gotIR, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})); d != "" {
				t.Errorf("IR from the referenced Secrets (%d of %d) and ConfigMaps (%d of %d) only (-all +referenced):\n%s",
					len(in.Secrets), len(c.In.Secrets), len(in.ConfigMaps), len(c.In.ConfigMaps), d)
			}
			want, _ := yaml.Marshal(wantSt)
			got, _ := yaml.Marshal(gotSt)
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("status from the referenced objects only (-all +referenced):\n%s", d)
			}
		})
	}
}

// TestReferences checks what is named: a Secret of the Gateway's namespace,
// one of another namespace a ReferenceGrant allows, a missing one (it may
// appear), not one no grant allows; ConfigMaps of the policies that apply
// to a backend of a route of Membrane's, whether they resolve or not.
func TestReferences(t *testing.T) {
	for _, c := range []struct {
		file                string
		secrets, configMaps []string
	}{
		{"https.in.yaml", []string{"certs/wildcard", "web/example-tls", "web/nope"}, nil},
		{"ingress.in.yaml", []string{"default/missing-tls", "default/shop-tls"}, nil},
		{"backendtls.in.yaml", nil, []string{"default/ca", "default/nope"}},
	} {
		raw, err := os.ReadFile(filepath.Join("testdata", c.file))
		if err != nil {
			t.Fatal(err)
		}
		in, err := ParseObjects(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		_, _, refs := BuildWithReferences(in)
		names := func(l []types.NamespacedName) []string {
			var out []string
			for _, nn := range l {
				out = append(out, nn.String())
			}
			return out
		}
		if d := cmp.Diff(c.secrets, names(refs.Secrets)); d != "" {
			t.Errorf("%s Secrets (-want +got):\n%s", c.file, d)
		}
		if d := cmp.Diff(c.configMaps, names(refs.ConfigMaps)); d != "" {
			t.Errorf("%s ConfigMaps (-want +got):\n%s", c.file, d)
		}
	}
}

package l7

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/translate"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenIn is testdata/<case>.in.yaml.
type goldenIn struct {
	Options   Options     `json:"options"`
	IPCache   ipcache.Map `json:"ipcache"`
	Endpoints []Endpoint  `json:"endpoints"`
}

// goldenOut is testdata/<case>.out.yaml.
type goldenOut struct {
	Node     translate.Node    `json:"node"`
	Origins  map[string]string `json:"origins"`
	Problems []string          `json:"problems,omitempty"`
}

// TestConfigGolden translates every testdata/<case>.in.yaml and compares
// it with <case>.out.yaml (go test ./xds/l7 -update rewrites them). Each
// output must also translate to Envoy resources.
func TestConfigGolden(t *testing.T) {
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
			var gi goldenIn
			if err := yaml.UnmarshalStrict(raw, &gi); err != nil {
				t.Fatalf("parse %s: %v", in, err)
			}
			n, origins, problems := Config(gi.Options, gi.Endpoints, gi.IPCache)
			got := goldenOut{Node: n, Origins: origins}
			for _, p := range problems {
				got.Problems = append(got.Problems, p.Error())
			}
			b, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".out.yaml")
			if *update {
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./xds/l7 -update)", err)
			}
			if d := cmp.Diff(string(want), string(b)); d != "" {
				t.Errorf("%s (-want +got):\n%s", path, d)
			}
			if _, err := n.Resources(); err != nil {
				t.Errorf("the configuration does not translate: %v", err)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	pfx := netip.MustParsePrefix
	ipc := ipcache.Map{
		pfx("0.0.0.0/0"):     identity.World,
		pfx("10.0.1.7/32"):   300,
		pfx("10.0.2.7/32"):   300,
		pfx("10.0.1.9/32"):   400,
		pfx("192.0.2.10/32"): identity.Host,
	}
	get := []policy.HTTPRule{{Method: "GET", Path: "/api/.*", Headers: []policy.HeaderMatch{
		{Name: "Content-Type", Value: "application/json"},
		{Name: "X-Trace", Mismatch: "LOG"}, // does not deny: no requirement
	}}}
	eps := []Endpoint{{Name: "payments/payment-a", IP: netip.MustParseAddr("10.0.1.5"), Rules: []policy.L7Rule{
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3000, RemoteIdentities: []identity.ID{300, 500}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/payment-l7 rules[0] ingress[0]"}},
		// Identity 500 has no address: the rule lets nobody in.
		{Direction: policy.Ingress, Proto: policy.TCP, Port: 3001, RemoteIdentities: []identity.ID{500}, HTTP: get,
			Origins: []string{"MembraneNetworkPolicy payments/other rules[0] ingress[0]"}},
		{Direction: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 81, RemoteIdentities: []identity.ID{0}, HTTP: []policy.HTTPRule{{}},
			Origins: []string{"MembraneClusterwideNetworkPolicy web rules[1] egress[0]"}},
		{Direction: policy.Egress, Proto: policy.TCP, Port: 1000, EndPort: 2000, RemoteIdentities: []identity.ID{0}},
	}}}
	o := Options{ProxyPort: 15001, AccessLogCluster: "membrane-agent", UpstreamMark: 0x0A00}
	n, origins, problems := Config(o, eps, ipc)
	hdr := []translate.HTTPRule{{Method: "GET", Path: "/api/.*", Headers: []translate.Header{{Name: "Content-Type", Value: "application/json"}}}}
	ep := netip.MustParseAddr("10.0.1.5")
	want := translate.Node{ProxyPort: 15001, AccessLogCluster: "membrane-agent", UpstreamMark: 0x0A00, Ports: []translate.Port{
		{Direction: translate.Ingress, Endpoint: ep, Port: 3000, Rules: []translate.Rule{{Peers: []netip.Prefix{pfx("10.0.1.7/32"), pfx("10.0.2.7/32")}, HTTP: hdr}},
			Origins: []string{"MembraneNetworkPolicy payments/payment-l7"}},
		{Direction: translate.Ingress, Endpoint: ep, Port: 3001, Origins: []string{"MembraneNetworkPolicy payments/other"}},
		{Direction: translate.Egress, Endpoint: ep, Port: 80, Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{}}}}, Origins: []string{"MembraneClusterwideNetworkPolicy web"}},
		{Direction: translate.Egress, Endpoint: ep, Port: 81, Rules: []translate.Rule{{HTTP: []translate.HTTPRule{{}}}}, Origins: []string{"MembraneClusterwideNetworkPolicy web"}},
	}}
	if d := cmp.Diff(want, n, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); d != "" {
		t.Errorf("node (-want +got):\n%s", d)
	}
	if len(problems) != 1 {
		t.Errorf("problems %v, want the port range over %d ports", problems, MaxPortRange)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range origins {
			if !yield(k) {
				return
			}
		}
	})
	if d := cmp.Diff([]string{"MembraneClusterwideNetworkPolicy web", "MembraneNetworkPolicy payments/other", "MembraneNetworkPolicy payments/payment-l7"}, names); d != "" {
		t.Errorf("policies (-want +got):\n%s", d)
	}
	if _, err := n.Resources(); err != nil {
		t.Errorf("the configuration does not translate: %v", err)
	}

	// A policy's fingerprint changes with what it contributes, and only
	// then.
	eps[0].Rules[0].HTTP = []policy.HTTPRule{{Method: "POST"}}
	_, changed, _ := Config(o, eps, ipc)
	for name, fp := range origins {
		if same := changed[name] == fp; same != (name != "MembraneNetworkPolicy payments/payment-l7") {
			t.Errorf("%s: fingerprint unchanged = %v after changing payment-l7's rule", name, same)
		}
	}
}

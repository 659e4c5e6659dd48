package mtls

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/xds/xdstest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

type goldenCase struct {
	name string
	in   Config
	out  Resources
}

func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	var cases []goldenCase
	for _, in := range ins {
		raw, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var c Config
		if err := yaml.UnmarshalStrict(raw, &c); err != nil {
			t.Fatalf("parse %s: %v", in, err)
		}
		out, err := c.Resources()
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		cases = append(cases, goldenCase{strings.TrimSuffix(filepath.Base(in), ".in.yaml"), c, out})
	}
	return cases
}

// TestResourcesGolden compares the translation of testdata/<case>.in.yaml
// with <case>.listeners.json and <case>.clusters.json (-update rewrites
// them).
func TestResourcesGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			xdstest.CheckGolden(t, filepath.Join("testdata", c.name+".listeners.json"), c.out.Listeners, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.name+".clusters.json"), c.out.Clusters, *update)
		})
	}
}

// TestValidate: bad input is refused with the field named.
func TestValidate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	good := Config{OutboundPort: 15002, TunnelPort: 15008, Inbound: []Inbound{{
		Destination: netip.MustParseAddr("10.0.0.1"), DestinationID: spiffeid.RequireFromPath(td, "/ns/a/sa/b"),
		Peers: []Peer{{TrustDomain: td}},
	}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(*Config)
		field  string
	}{
		"same ports":   {func(c *Config) { c.TunnelPort = c.OutboundPort }, "tunnelPort"},
		"no dest id":   {func(c *Config) { c.Inbound[0].DestinationID = spiffeid.ID{} }, "inbound[0].destinationID"},
		"peer both":    {func(c *Config) { c.Inbound[0].Peers[0].ID = spiffeid.RequireFromPath(td, "/x") }, "inbound[0].peers[0]"},
		"ipv6":         {func(c *Config) { c.Inbound[0].Destination = netip.MustParseAddr("fd00::1") }, "inbound[0].destination"},
		"outbound src": {func(c *Config) { c.Outbound = []Outbound{{DestinationID: good.Inbound[0].DestinationID}} }, "outbound[0].source"},
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			c.Inbound = []Inbound{good.Inbound[0]}
			c.Inbound[0].Peers = []Peer{good.Inbound[0].Peers[0]}
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
			if _, err := c.Resources(); err == nil {
				t.Fatal("Resources accepted an invalid config")
			}
		})
	}
}

package mtls

import (
	"flag"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/xds/xdstest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenCases reads and translates every testdata/*.in.yaml.
func goldenCases(t *testing.T) []xdstest.GoldenCase[Config, Resources] {
	return xdstest.GoldenCases(t, func(raw []byte) (Config, Resources, error) {
		var c Config
		if err := yaml.UnmarshalStrict(raw, &c); err != nil {
			return c, Resources{}, fmt.Errorf("parse: %w", err)
		}
		out, err := c.Resources()
		return c, out, err
	})
}

// TestResourcesGolden compares the translation of testdata/<case>.in.yaml
// with <case>.listeners.json, <case>.routes.json and <case>.clusters.json
// (-update rewrites them).
func TestResourcesGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".listeners.json"), c.Out.Listeners, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".routes.json"), c.Out.Routes, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".clusters.json"), c.Out.Clusters, *update)
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

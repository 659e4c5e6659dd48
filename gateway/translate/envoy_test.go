package translate

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	xdstranslate "github.com/membrane-mesh/membrane/xds/translate"
)

// TestEnvoyValidate loads every golden case's resources, as static
// resources of a bootstrap (route configurations inline), into the pinned Envoy in validate mode: the
// translation must be something Envoy accepts, not only something that fits
// the API's schema.
func TestEnvoyValidate(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			// Static listeners cannot use RDS: each gets its route
			// configurations inline, so that Envoy parses them too.
			inline, err := xdstranslate.Resources{Listeners: c.Out.out.Listeners, Routes: c.Out.out.Routes}.InlineRoutes()
			if err != nil {
				t.Fatal(err)
			}
			b, err := protojson.Marshal(&bootstrapv3.Bootstrap{
				Node: &corev3.Node{Id: "test-node", Cluster: "membrane"},
				Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
				}}}},
				StaticResources: &bootstrapv3.Bootstrap_StaticResources{Listeners: inline, Clusters: c.Out.out.Clusters},
			})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "envoy.json")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, envoy, "--mode", "validate", "-c", path,
				"--disable-hot-restart", "--log-level", "warn").CombinedOutput()
			if err != nil {
				t.Fatalf("envoy --mode validate: %v\n%s", err, out)
			}
		})
	}
}

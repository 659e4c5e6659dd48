package translate

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	xdstranslate "github.com/membrane-mesh/membrane/xds/translate"
	"github.com/membrane-mesh/membrane/xds/xdstest"
)

// TestEnvoyValidate loads every golden case's resources, as static
// resources of a bootstrap (route configurations inline, certificates as
// static secrets), into the pinned Envoy in validate mode: the translation
// must be something Envoy accepts, not only something that fits the API's
// schema.
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
			if err := envoyValidate(t, envoy, &bootstrapv3.Bootstrap_StaticResources{
				Listeners: inline, Clusters: c.Out.out.Clusters, Secrets: c.Out.out.Secrets,
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// envoyValidate loads the static resources into the pinned Envoy in
// validate mode (the certificates' SDS references made static).
func envoyValidate(t *testing.T, envoy string, static *bootstrapv3.Bootstrap_StaticResources) error {
	t.Helper()
	return xdstest.EnvoyValidate(t, envoy, &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: "test-node", Cluster: "membrane"},
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		}}}},
		StaticResources: static,
	})
}

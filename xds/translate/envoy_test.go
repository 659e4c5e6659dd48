package translate

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// TestEnvoyValidate loads every golden case's resources, as static
// resources of a bootstrap, into the pinned Envoy in validate mode: the
// translation must be something Envoy accepts, not only something that fits
// the API's schema.
func TestEnvoyValidate(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b, err := protojson.Marshal(bootstrap(t, c.in, c.out))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "envoy.json")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, envoy, "--mode", "validate", "-c", path,
				"--disable-hot-restart", "--log-level", "warn")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("envoy --mode validate: %v\n%s\nbootstrap:\n%s", err, out, b)
			}
			t.Logf("envoy --mode validate: %s", out)
		})
	}
}

// bootstrap is an Envoy bootstrap with the translated resources as static
// resources, an admin listener on a free loopback port and, when the
// listener logs to it, a stand-in for the bootstrap's static access-log
// cluster.
func bootstrap(t *testing.T, n Node, res Resources) *bootstrapv3.Bootstrap {
	t.Helper()
	b := &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: "test-node", Cluster: "membrane"},
		Admin: &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", 0)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: res.Listeners,
			Clusters:  res.Clusters,
		},
	}
	if n.AccessLogCluster != "" {
		h2, err := marshalAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		b.StaticResources.Clusters = append(b.StaticResources.Clusters, &clusterv3.Cluster{
			Name:                          n.AccessLogCluster,
			ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:                durationpb.New(time.Second),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOpts: h2},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: n.AccessLogCluster,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{
					LbEndpoints: []*endpointv3.LbEndpoint{{
						HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
							Address: &corev3.Address{Address: &corev3.Address_Pipe{
								Pipe: &corev3.Pipe{Path: "/var/run/membrane/als.sock"},
							}},
						}},
					}},
				}},
			},
		})
	}
	return b
}

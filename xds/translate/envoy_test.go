package translate

import (
	"slices"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/xds/xdstest"
)

// TestEnvoyValidate loads every golden case's resources, as static
// resources of a bootstrap, into the pinned Envoy in validate mode: the
// translation must be something Envoy accepts, not only something that fits
// the API's schema. The listener is loaded twice: as it is (routes over
// RDS through ADS) and, on another port, with each chain's route
// configuration inlined, so Envoy also parses the route configurations
// and their per-route RBAC rules.
func TestEnvoyValidate(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			if err := xdstest.EnvoyValidate(t, envoy, bootstrap(t, c.In, c.Out)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// bootstrap is an Envoy bootstrap with the translated resources as static
// resources, an admin listener on a free loopback port and, when the
// listener logs to it, a stand-in for the bootstrap's static access-log
// cluster.
func bootstrap(t *testing.T, n Node, res Resources) *bootstrapv3.Bootstrap {
	t.Helper()
	inline, err := res.InlineRoutes()
	if err != nil {
		t.Fatal(err)
	}
	listeners := slices.Clone(res.Listeners)
	for _, l := range inline {
		l.Name += "-inline"
		sa := l.GetAddress().GetSocketAddress()
		sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: sa.GetPortValue() + 1}
		listeners = append(listeners, l)
	}
	b := &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: "test-node", Cluster: "membrane"},
		Admin: &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", 0)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: listeners,
			Clusters:  res.Clusters,
		},
		// The node bootstrap's ADS (never reached in validate mode).
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "membrane-agent"},
				}}},
			},
		},
	}
	b.StaticResources.Clusters = append(b.StaticResources.Clusters, h2Cluster(t, "membrane-agent"))
	if n.AccessLogCluster != "" && n.AccessLogCluster != "membrane-agent" {
		b.StaticResources.Clusters = append(b.StaticResources.Clusters, h2Cluster(t, n.AccessLogCluster))
	}
	return b
}

// h2Cluster is a stand-in for one of the bootstrap's static gRPC clusters.
func h2Cluster(t *testing.T, name string) *clusterv3.Cluster {
	t.Helper()
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
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOpts: h2},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
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
	}
}

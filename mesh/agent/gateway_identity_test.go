package agent

import (
	"net/netip"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	gwtranslate "github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/xds/accesslog"
)

func TestWithIngressIdentity(t *testing.T) {
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := anypb.New(&tcpproxyv3.TcpProxy{StatPrefix: "tls"})
	if err != nil {
		t.Fatal(err)
	}
	in := gwtranslate.Resources{
		Listeners: []*listenerv3.Listener{{Name: "gw", FilterChains: []*listenerv3.FilterChain{
			{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}},
			{Filters: []*listenerv3.Filter{{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcp}}}},
		}}},
		Routes:   []*routev3.RouteConfiguration{{Name: "gateway/gw#gw"}},
		Clusters: []*clusterv3.Cluster{{Name: "gateway/a"}, {Name: "gateway/b"}},
		Secrets:  []*tlsv3.Secret{{Name: "gateway-certificate/shop/shop-tls"}},
	}
	src := netip.MustParseAddr("10.244.1.1")
	out, err := withIngressIdentity(in, src, "membrane-agent")
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Routes) != 1 || out.Routes[0].GetName() != "gateway/gw#gw" {
		t.Errorf("route configurations %v, want the input's", out.Routes)
	}
	if len(out.Secrets) != 1 || out.Secrets[0].GetName() != "gateway-certificate/shop/shop-tls" {
		t.Errorf("secrets %v, want the input's", out.Secrets)
	}
	for _, c := range out.Clusters {
		if got := c.GetUpstreamBindConfig().GetSourceAddress().GetAddress(); got != src.String() {
			t.Errorf("cluster %s binds %q, want %s", c.Name, got, src)
		}
	}
	for _, c := range in.Clusters {
		if c.UpstreamBindConfig != nil {
			t.Errorf("input cluster %s was changed", c.Name)
		}
	}
	var m hcmv3.HttpConnectionManager
	if err := out.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	if len(m.AccessLog) != 1 {
		t.Fatalf("HTTP connection manager has %d access logs, want 1", len(m.AccessLog))
	}
	var als grpcalsv3.HttpGrpcAccessLogConfig
	if err := m.AccessLog[0].GetTypedConfig().UnmarshalTo(&als); err != nil {
		t.Fatal(err)
	}
	if als.GetCommonConfig().GetLogName() != accesslog.GatewayLogName ||
		als.GetCommonConfig().GetGrpcService().GetEnvoyGrpc().GetClusterName() != "membrane-agent" {
		t.Errorf("access log %v", &als)
	}
	if !proto.Equal(out.Listeners[0].FilterChains[1].Filters[0].GetTypedConfig(), tcp) {
		t.Errorf("the TCP proxy chain was changed")
	}

	// Without an address (no PodCIDR yet) the clusters keep the node's.
	out, err = withIngressIdentity(in, netip.Addr{}, "membrane-agent")
	if err != nil {
		t.Fatal(err)
	}
	if out.Clusters[0].UpstreamBindConfig != nil {
		t.Errorf("cluster bound without an ingress address")
	}
}

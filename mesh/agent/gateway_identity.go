package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	corelisters "k8s.io/client-go/listers/core/v1"

	gwtranslate "github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/nldump"
	"github.com/membrane-mesh/membrane/xds/accesslog"
)

// ingressAddrLabel labels the node's gateway source address on the
// loopback interface, so cleanup finds only its own.
const ingressAddrLabel = "lo:mingress"

// gatewayIdentity gives the node Envoy's gateway traffic to backends the
// reserved ingress identity: every gateway cluster binds its upstream
// connections to the node's ingress address (k8s.NodeIngressIP, in the
// ipcache as reserved:ingress on every node), which this node holds on
// its loopback interface so replies come back to it; and every gateway
// HTTP listener logs its requests to the agent's access-log service.
type gatewayIdentity struct {
	log   *slog.Logger
	node  string
	nodes corelisters.NodeLister
	addr  func(netip.Addr) error

	mu   sync.Mutex
	held netip.Addr
}

// wrap returns publish with the ingress identity applied to what it gets.
func (g *gatewayIdentity) wrap(publish func(context.Context, gwtranslate.Resources)) func(context.Context, gwtranslate.Resources) {
	return func(ctx context.Context, res gwtranslate.Resources) {
		src := g.address()
		out, err := withIngressIdentity(res, src, accessLogCluster)
		if err != nil {
			g.log.Error("apply the ingress identity to the gateway configuration", "error", err)
			out = res
		}
		publish(ctx, out)
	}
}

// address returns the node's ingress address, holding it on the loopback
// interface; invalid (the node's own address is used) while the node has
// no PodCIDR or the address cannot be added.
func (g *gatewayIdentity) address() netip.Addr {
	n, err := g.nodes.Get(g.node)
	if err != nil {
		g.log.Warn("gateway traffic leaves from the node address: node not known", "node", g.node, "error", err)
		return netip.Addr{}
	}
	ip := k8s.NodeIngressIP(n)
	if !ip.IsValid() {
		g.log.Warn("gateway traffic leaves from the node address: node has no IPv4 PodCIDR", "node", g.node)
		return netip.Addr{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != ip {
		if err := g.addr(ip); err != nil {
			g.log.Error("gateway traffic leaves from the node address", "address", ip, "error", err)
			return netip.Addr{}
		}
		g.held = ip
		g.log.Info("gateway traffic to backends leaves from the ingress address", "address", ip)
	}
	return ip
}

// holdIngressAddr puts ip (as a /32) on the loopback interface.
func holdIngressAddr(ip netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: ingressAddrLabel}
	if err := netlink.AddrReplace(lo, a); err != nil {
		return fmt.Errorf("add %s to lo: %w", ip, err)
	}
	return nil
}

// cleanupIngressAddr removes the addresses holdIngressAddr added.
func cleanupIngressAddr(log *slog.Logger) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(lo, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	var errs []error
	for _, a := range addrs {
		if a.Label != ingressAddrLabel {
			continue
		}
		if err := netlink.AddrDel(lo, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from lo: %w", a.IPNet, err))
			continue
		}
		log.Info("removed the gateway source address", "address", a.IPNet.String())
	}
	return errors.Join(errs...)
}

// withIngressIdentity returns a copy of res whose clusters bind upstream
// connections to src (when valid) and whose HTTP connection managers send
// their access logs, named accesslog.GatewayLogName, to alsCluster.
func withIngressIdentity(res gwtranslate.Resources, src netip.Addr, alsCluster string) (gwtranslate.Resources, error) {
	out := gwtranslate.Resources{Routes: res.Routes, Secrets: res.Secrets}
	for _, c := range res.Clusters {
		c = proto.Clone(c).(*clusterv3.Cluster)
		if src.IsValid() {
			c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{
				Address: src.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
			}}
		}
		if err := limitUpstreamConnections(c); err != nil {
			return gwtranslate.Resources{}, fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		out.Clusters = append(out.Clusters, c)
	}
	al, err := gatewayAccessLog(alsCluster)
	if err != nil {
		return gwtranslate.Resources{}, err
	}
	for _, l := range res.Listeners {
		l = proto.Clone(l).(*listenerv3.Listener)
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				tc := f.GetTypedConfig()
				if tc == nil || !tc.MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
					continue
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := tc.UnmarshalTo(hcm); err != nil {
					return gwtranslate.Resources{}, fmt.Errorf("listener %s: %w", l.Name, err)
				}
				hcm.AccessLog = append(hcm.AccessLog, al)
				a := &anypb.Any{}
				if err := anypb.MarshalFrom(a, hcm, proto.MarshalOptions{Deterministic: true}); err != nil {
					return gwtranslate.Resources{}, fmt.Errorf("listener %s: %w", l.Name, err)
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}
		}
		out.Listeners = append(out.Listeners, l)
	}
	return out, nil
}

// Policy is checked when a connection opens: the gateway's pooled
// connections to backends are closed when idle and after a while, so a
// policy change applies to all gateway traffic within
// upstreamMaxConnectionDuration.
const (
	upstreamIdleTimeout           = 5 * time.Second
	upstreamMaxConnectionDuration = 60 * time.Second
	httpProtocolOptions           = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// limitUpstreamConnections sets c's upstream HTTP connections' idle
// timeout and maximum duration, keeping its protocol options (HTTP/1.1
// when it has none).
func limitUpstreamConnections(c *clusterv3.Cluster) error {
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if a, ok := c.TypedExtensionProtocolOptions[httpProtocolOptions]; ok {
		if err := a.UnmarshalTo(opts); err != nil {
			return fmt.Errorf("decode the HTTP protocol options: %w", err)
		}
	} else {
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			},
		}
	}
	if opts.CommonHttpProtocolOptions == nil {
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{}
	}
	opts.CommonHttpProtocolOptions.IdleTimeout = durationpb.New(upstreamIdleTimeout)
	opts.CommonHttpProtocolOptions.MaxConnectionDuration = durationpb.New(upstreamMaxConnectionDuration)
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, opts, proto.MarshalOptions{Deterministic: true}); err != nil {
		return fmt.Errorf("marshal the HTTP protocol options: %w", err)
	}
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions[httpProtocolOptions] = a
	return nil
}

// gatewayAccessLog sends a gateway listener's HTTP access log, named
// accesslog.GatewayLogName, to the agent.
func gatewayAccessLog(cluster string) (*accesslogv3.AccessLog, error) {
	cfg := &anypb.Any{}
	err := anypb.MarshalFrom(cfg, &grpcalsv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName: accesslog.GatewayLogName,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	}, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		return nil, fmt.Errorf("marshal the gateway access log: %w", err)
	}
	return &accesslogv3.AccessLog{
		Name:       "envoy.access_loggers.http_grpc",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}, nil
}

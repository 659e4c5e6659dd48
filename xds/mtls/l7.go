package mtls

import (
	"fmt"
	"net/netip"
	"strconv"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	setfscommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	origsrchttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/original_src/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	setfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_filter_state/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	internalupstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/membrane-mesh/membrane/xds/translate"
)

// Resources of the tunnels' L7 policing.
const (
	// L7Listener is the internal listener (a user-space socket of Envoy,
	// no port) that parses a tunnel's stream as HTTP.
	L7Listener = "membrane-mtls-l7"
	// L7Cluster connects a tunnel's stream to L7Listener.
	L7Cluster = "membrane-mtls-l7"
	// L7DeliverCluster forwards the allowed requests to the pod.
	L7DeliverCluster = "membrane-mtls-l7-deliver"
	// AccessLogName and L7AccessLogName name the access logs of the
	// tunnels (one entry per CONNECT) and of the requests inside.
	AccessLogName   = "membrane-mtls"
	L7AccessLogName = "membrane-mtls-l7"
	// PeerIDFilterState and LocalIDFilterState are the filter state
	// objects (strings) that carry a tunnel's two SPIFFE IDs, the peer's
	// and the destination's, to L7Listener: its RBAC matches the peer's,
	// its access log holds both.
	PeerIDFilterState  = "membrane.mtls.peer_id"
	LocalIDFilterState = "membrane.mtls.local_id"
)

// Envoy's names for what the tunnel hands over to L7Listener.
const (
	originalSrcHTTPFilter  = "envoy.filters.http.original_src"
	rbacFilter             = "envoy.filters.http.rbac"
	setFilterStateFilter   = "envoy.filters.http.set_filter_state"
	originalDstLocalState  = "envoy.filters.listener.original_dst.local_ip"
	originalDstRemoteState = "envoy.filters.listener.original_dst.remote_ip"
)

// l7Destination is one local pod port whose tunnels carry HTTP to police.
type l7Destination struct {
	Destination   netip.Addr
	Port          uint16
	DestinationID spiffeid.ID
	Rules         []L7Rule
}

func (d l7Destination) name() string {
	return netip.AddrPortFrom(d.Destination, d.Port).String()
}

// disabled is a route's configuration that turns an HTTP filter off.
func disabled() (*anypb.Any, error) {
	return marshalAny(&routev3.FilterConfig{Disabled: true})
}

// tunnelFilterState hands a CONNECT stream's facts to the internal
// listener it is routed to: the destination it names and the client's pod
// address (which the internal listener's original_dst restores as its
// connection's local and remote addresses), and the two SPIFFE IDs.
func tunnelFilterState() (*hcmv3.HttpFilter, error) {
	value := func(key, factory, format string) *setfscommonv3.FilterStateValue {
		return &setfscommonv3.FilterStateValue{
			Key:        &setfscommonv3.FilterStateValue_ObjectKey{ObjectKey: key},
			FactoryKey: factory,
			Value: &setfscommonv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
					Specifier: &corev3.DataSource_InlineString{InlineString: format},
				}},
			}},
			ReadOnly:           true,
			SharedWithUpstream: setfscommonv3.FilterStateValue_ONCE,
		}
	}
	cfg, err := marshalAny(&setfsv3.Config{OnRequestHeaders: []*setfscommonv3.FilterStateValue{
		value(originalDstLocalState, "", "%REQ("+DestinationHeader+")%"),
		// The HTTP connection manager's remote address: the client's, from
		// x-forwarded-for (port 0).
		value(originalDstRemoteState, "", "%DOWNSTREAM_REMOTE_ADDRESS%"),
		value(PeerIDFilterState, "envoy.string", "%DOWNSTREAM_PEER_URI_SAN%"),
		value(LocalIDFilterState, "envoy.string", "%DOWNSTREAM_LOCAL_URI_SAN%"),
	}})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: setFilterStateFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}

// l7 is the internal listener that polices the tunnels' HTTP, one filter
// chain per destination, with their route configurations, and its two
// clusters.
func (c Config) l7(dests []l7Destination) (*listenerv3.Listener, []*routev3.RouteConfiguration, []*clusterv3.Cluster, error) {
	origDst, err := marshalAny(&origdstv3.OriginalDst{})
	if err != nil {
		return nil, nil, nil, err
	}
	l := &listenerv3.Listener{
		Name:              L7Listener,
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.listener.original_dst",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: origDst},
		}},
	}
	var routes []*routev3.RouteConfiguration
	for _, d := range dests {
		fc, rc, err := c.l7Chain(d)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("filter chain %s: %w", d.name(), err)
		}
		l.FilterChains = append(l.FilterChains, fc)
		routes = append(routes, rc)
	}
	toListener, err := l7Cluster()
	if err != nil {
		return nil, nil, nil, err
	}
	// The destination restored by original_dst, in the client's HTTP
	// version (gRPC over h2c keeps working).
	deliver, err := translate.OriginalDstHTTPCluster(L7DeliverCluster)
	if err != nil {
		return nil, nil, nil, err
	}
	return l, routes, []*clusterv3.Cluster{toListener, deliver}, nil
}

// l7Chain parses one destination's stream as HTTP (HTTP/1.1 or HTTP/2,
// like the L7 path) and lets through the requests the rules allow, from
// the client's address with the proxy's mark. The rules (with the peers'
// pod addresses) are the chain's route configuration, over RDS: a rule
// change or a peer pod coming reaches the open connections and drains
// none.
func (c Config) l7Chain(d l7Destination) (*listenerv3.FilterChain, *routev3.RouteConfiguration, error) {
	name := d.name()
	policies := map[string]*rbacconfigv3.Policy{}
	for i, r := range d.Rules {
		perms, err := translate.HTTPPermissions(r.HTTP)
		if err != nil {
			return nil, nil, fmt.Errorf("rules[%d]: %w", i, err)
		}
		p := &rbacconfigv3.Policy{Permissions: perms}
		for _, peer := range r.Peers {
			p.Principals = append(p.Principals, l7Principal(peer))
		}
		if len(p.Principals) == 0 {
			continue // from nobody
		}
		policies["rules["+strconv.Itoa(i)+"]"] = p
	}
	rbac, perRBAC, err := routeRBAC(policies, "mtls_l7.")
	if err != nil {
		return nil, nil, err
	}
	origSrc, err := marshalAny(&origsrchttpv3.OriginalSrc{Mark: c.UpstreamMark})
	if err != nil {
		return nil, nil, err
	}
	router, err := marshalAny(&routerv3.Router{SuppressEnvoyHeaders: true})
	if err != nil {
		return nil, nil, err
	}
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "membrane_mtls_l7",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: translate.ADS(), RouteConfigName: "mtls/" + name,
		}},
		// The connection's remote address is the client's (restored by
		// original_dst), never a header the client sent.
		UseRemoteAddress: wrapperspb.Bool(true),
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rbac}},
			{Name: originalSrcHTTPFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: origSrc}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
		// As the L7 path: RBAC sees the normalized path; the server's
		// Server header is kept; WebSocket upgrades pass (checked).
		NormalizePath:              wrapperspb.Bool(true),
		MergeSlashes:               true,
		ServerHeaderTransformation: hcmv3.HttpConnectionManager_PASS_THROUGH,
		UpgradeConfigs:             []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
	}
	if c.AccessLogCluster != "" {
		al, err := accessLog(c.AccessLogCluster, L7AccessLogName, []string{PeerIDFilterState, LocalIDFilterState})
		if err != nil {
			return nil, nil, err
		}
		m.AccessLog = []*accesslogv3.AccessLog{al}
	}
	hcm, err := marshalAny(m)
	if err != nil {
		return nil, nil, err
	}
	rc := &routev3.RouteConfiguration{
		Name: "mtls/" + name,
		// As the tunnel's: the deliver cluster may come after it.
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name: "any", Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:  "mtls/" + name,
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: L7DeliverCluster},
					Timeout:          durationpb.New(0),
				}},
				TypedPerFilterConfig: map[string]*anypb.Any{rbacFilter: perRBAC},
			}},
		}},
	}
	return &listenerv3.FilterChain{
		Name: name,
		FilterChainMatch: &listenerv3.FilterChainMatch{
			PrefixRanges:    []*corev3.CidrRange{host(d.Destination)},
			DestinationPort: wrapperspb.UInt32(uint32(d.Port)),
		},
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}},
	}, rc, nil
}

// routeRBAC is the configuration of an RBAC filter whose rules are its
// routes' own (policies, for the route that gets perRoute): the filter's,
// without policies, denies a request that reaches a route without. The
// rules travel with the route configuration (RDS), not the filter chain,
// whose change would make Envoy drain its connections.
func routeRBAC(policies map[string]*rbacconfigv3.Policy, statPrefix string) (filter, perRoute *anypb.Any, err error) {
	filter, err = marshalAny(&rbacv3.RBAC{
		Rules:           &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW},
		RulesStatPrefix: statPrefix,
	})
	if err != nil {
		return nil, nil, err
	}
	perRoute, err = marshalAny(&rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{
		Rules:           &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: policies},
		RulesStatPrefix: statPrefix,
	}})
	if err != nil {
		return nil, nil, err
	}
	return filter, perRoute, nil
}

// l7Principal: the tunnel's peer SPIFFE ID (handed over as filter state)
// and, when given, the client's pod address.
func l7Principal(p Peer) *rbacconfigv3.Principal {
	name := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.ID.String()}}
	if p.ID.IsZero() {
		name = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p.TrustDomain.IDString() + "/"}}
	}
	id := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
		Key: PeerIDFilterState, Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: name},
	}}}
	if len(p.Sources) == 0 {
		return id
	}
	var srcs []*rbacconfigv3.Principal
	for _, s := range p.Sources {
		srcs = append(srcs, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: cidr(s)}})
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: []*rbacconfigv3.Principal{
		id,
		{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: srcs}}},
	}}}}
}

// l7Cluster reaches L7Listener, passing the tunnel's shared filter state.
func l7Cluster() (*clusterv3.Cluster, error) {
	raw, err := marshalAny(&rawbufferv3.RawBuffer{})
	if err != nil {
		return nil, err
	}
	ts, err := marshalAny(&internalupstreamv3.InternalUpstreamTransport{
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: raw}},
	})
	if err != nil {
		return nil, err
	}
	cl := staticCluster(L7Cluster, &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
		AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: L7Listener},
	}}})
	cl.TransportSocket = &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.internal_upstream",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ts},
	}
	return cl, nil
}

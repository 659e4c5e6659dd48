package mtls

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	origsrchttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/original_src/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/membrane-mesh/membrane/xds/translate"
)

// Resource names.
const (
	OutboundListener = "membrane-mtls-outbound"
	InboundListener  = "membrane-mtls-inbound"
	DeliverCluster   = "membrane-mtls-deliver"
	// BundleSecret is the SDS secret holding the trust bundle (a
	// validation context); each SVID's secret is named by its SPIFFE ID.
	BundleSecret = "membrane-spiffe-bundle"
	// DestinationHeader carries the original destination (ip:port) in the
	// CONNECT request.
	DestinationHeader = "x-membrane-destination"
)

const (
	// inboundRBACPrefix prefixes the tunnel port's RBAC statistics
	// (http.membrane_mtls_inbound.rbac.mtls.*).
	inboundRBACPrefix = "mtls."
	connectTimeout    = 5 * time.Second
	httpProtocolOpts  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tlsSocket         = "envoy.transport_sockets.tls"
)

// Resources are the listeners and clusters of a Config (the secrets come
// from Secrets).
type Resources struct {
	Listeners []*listenerv3.Listener
	// Routes are the route configurations (over RDS) of the inbound
	// listener, one per local identity, and of the internal L7 listener,
	// one per destination.
	Routes   []*routev3.RouteConfiguration
	Clusters []*clusterv3.Cluster
}

// Resources translates c. A Config with neither outbound nor inbound
// entries has no resources.
func (c Config) Resources() (Resources, error) {
	if err := c.Validate(); err != nil {
		return Resources{}, err
	}
	var out Resources
	if len(c.Outbound) > 0 {
		l, clusters, err := c.outbound()
		if err != nil {
			return Resources{}, fmt.Errorf("listener %s: %w", OutboundListener, err)
		}
		out.Listeners = append(out.Listeners, l)
		out.Clusters = append(out.Clusters, clusters...)
	}
	if len(c.Inbound) > 0 {
		l, routes, l7s, err := c.inbound()
		if err != nil {
			return Resources{}, fmt.Errorf("listener %s: %w", InboundListener, err)
		}
		out.Listeners = append(out.Listeners, l)
		out.Routes = append(out.Routes, routes...)
		out.Clusters = append(out.Clusters, deliverCluster())
		if len(l7s) > 0 {
			il, routes, clusters, err := c.l7(l7s)
			if err != nil {
				return Resources{}, fmt.Errorf("listener %s: %w", L7Listener, err)
			}
			out.Listeners = append(out.Listeners, il)
			out.Routes = append(out.Routes, routes...)
			out.Clusters = append(out.Clusters, clusters...)
		}
	}
	return out, nil
}

// tunnel is one outbound cluster: a destination node reached with one
// source identity, expecting one destination identity.
type tunnel struct {
	node     netip.Addr
	src, dst spiffeid.ID
}

func (t tunnel) name() string {
	sum := sha256.Sum256([]byte(t.src.String() + "\n" + t.dst.String()))
	return fmt.Sprintf("membrane-mtls-tunnel/%s/%s", t.node, hex.EncodeToString(sum[:8]))
}

func (c Config) outbound() (*listenerv3.Listener, []*clusterv3.Cluster, error) {
	origDst, err := marshalAny(&origdstv3.OriginalDst{})
	if err != nil {
		return nil, nil, err
	}
	l := &listenerv3.Listener{
		Name:        OutboundListener,
		Address:     socketAddress("127.0.0.1", c.OutboundPort),
		Transparent: wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.listener.original_dst",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: origDst},
		}},
	}
	obs := slices.Clone(c.Outbound)
	slices.SortFunc(obs, func(a, b Outbound) int {
		return cmp.Or(a.Destination.Compare(b.Destination), cmp.Compare(a.Port, b.Port), a.Source.Compare(b.Source))
	})
	obs = slices.CompactFunc(obs, func(a, b Outbound) bool {
		return a.Destination == b.Destination && a.Port == b.Port && a.Source == b.Source
	})
	tunnels := map[string]tunnel{}
	for _, o := range obs {
		t := tunnel{node: o.Node.Unmap(), src: o.SourceID, dst: o.DestinationID}
		tunnels[t.name()] = t
		name := fmt.Sprintf("%s>%s", o.Source.Unmap(), o.Destination.Unmap())
		match := &listenerv3.FilterChainMatch{
			PrefixRanges:       []*corev3.CidrRange{host(o.Destination)},
			SourcePrefixRanges: []*corev3.CidrRange{host(o.Source)},
		}
		if o.Port != 0 {
			match.DestinationPort = wrapperspb.UInt32(uint32(o.Port))
			name += ":" + strconv.Itoa(int(o.Port))
		}
		tp, err := marshalAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       "membrane_mtls_outbound",
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: t.name()},
			IdleTimeout:      c.idleTimeout(),
			TunnelingConfig: &tcpproxyv3.TcpProxy_TunnelingConfig{
				Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%",
				HeadersToAdd: []*corev3.HeaderValueOption{
					header(DestinationHeader, "%DOWNSTREAM_LOCAL_ADDRESS%"),
					header("x-forwarded-for", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
				},
			},
		})
		if err != nil {
			return nil, nil, err
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             name,
			FilterChainMatch: match,
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp},
			}},
		})
	}
	names := make([]string, 0, len(tunnels))
	for n := range tunnels {
		names = append(names, n)
	}
	slices.Sort(names)
	var clusters []*clusterv3.Cluster
	for _, n := range names {
		cl, err := c.tunnelCluster(n, tunnels[n])
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", n, err)
		}
		clusters = append(clusters, cl)
	}
	return l, clusters, nil
}

func (c Config) tunnelCluster(name string, t tunnel) (*clusterv3.Cluster, error) {
	tlsCtx, err := marshalAny(&tlsv3.UpstreamTlsContext{
		Sni: ServerName(t.dst),
		CommonTlsContext: commonTLS(t.src, &tlsv3.CertificateValidationContext{
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.dst.String()}},
			}},
		}),
	})
	if err != nil {
		return nil, err
	}
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
		return nil, err
	}
	cl := staticCluster(name, socketAddress(t.node.String(), c.TunnelPort))
	cl.TransportSocket = &corev3.TransportSocket{
		Name:       tlsSocket,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx},
	}
	cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOpts: h2}
	return cl, nil
}

// staticCluster is a cluster of one endpoint, addr.
func staticCluster(name string, addr *corev3.Address) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
				}},
			}},
		},
	}
}

// commonTLS presents the SVID of id and validates the peer with the trust
// bundle (and def, when not nil), TLS 1.3 only.
func commonTLS(id spiffeid.ID, def *tlsv3.CertificateValidationContext) *tlsv3.CommonTlsContext {
	bundle := &tlsv3.SdsSecretConfig{Name: BundleSecret, SdsConfig: translate.ADS()}
	c := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: id.String(), SdsConfig: translate.ADS()}},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: bundle},
	}
	if def != nil {
		c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: bundle,
			},
		}
	}
	return c
}

func (c Config) inbound() (*listenerv3.Listener, []*routev3.RouteConfiguration, []l7Destination, error) {
	inspector, err := marshalAny(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, nil, nil, err
	}
	l := &listenerv3.Listener{
		Name:    InboundListener,
		Address: socketAddress("0.0.0.0", c.TunnelPort),
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
		}},
	}
	byID := map[spiffeid.ID][]Inbound{}
	for _, in := range c.Inbound {
		byID[in.DestinationID] = append(byID[in.DestinationID], in)
	}
	ids := make([]spiffeid.ID, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return cmp.Compare(a.String(), b.String()) })
	var routes []*routev3.RouteConfiguration
	var l7s []l7Destination
	for _, id := range ids {
		fc, rc, dests, err := c.inboundChain(id, byID[id])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("filter chain %s: %w", id, err)
		}
		l.FilterChains = append(l.FilterChains, fc)
		routes = append(routes, rc)
		l7s = append(l7s, dests...)
	}
	return l, routes, l7s, nil
}

// inboundChain terminates the tunnels to the local pods of one identity:
// TLS with that identity's SVID, client certificate required; one CONNECT
// route per destination, each with its RBAC policy. A destination with L7
// rules goes to the internal listener (see l7.go), which it returns.
//
// The routes and their policies (which name the allowed peers' pod
// addresses) are the chain's route configuration, over RDS, not part of
// the chain: pods coming and going anywhere in the cluster change it, and
// a changed chain would make Envoy drain the tunnels' connections.
func (c Config) inboundChain(id spiffeid.ID, ins []Inbound) (*listenerv3.FilterChain, *routev3.RouteConfiguration, []l7Destination, error) {
	slices.SortFunc(ins, func(a, b Inbound) int {
		return cmp.Or(a.Destination.Compare(b.Destination), cmp.Compare(a.Port, b.Port))
	})
	type dest struct {
		match   destMatch
		in      Inbound
		l7      bool
		l7Rules []L7Rule
		// open are the peers of entries without L7 rules: every request.
		open []Peer
	}
	var order []string
	dests := map[string]*dest{}
	policies := map[string]*rbacconfigv3.Policy{}
	for _, in := range ins {
		m := destinationMatcher(in)
		d, ok := dests[m.name]
		if !ok {
			d = &dest{match: m, in: in}
			dests[m.name] = d
			order = append(order, m.name)
			policies[m.name] = &rbacconfigv3.Policy{
				Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Header{Header: m.header}}},
			}
		}
		p := policies[m.name]
		for _, peer := range in.Peers {
			p.Principals = append(p.Principals, principal(peer))
		}
		if in.L7 != nil {
			d.l7 = true
			d.l7Rules = append(d.l7Rules, in.L7.Rules...)
		} else {
			d.open = append(d.open, in.Peers...)
		}
	}
	anyL7 := slices.ContainsFunc(order, func(n string) bool { return dests[n].l7 })
	var routes []*routev3.Route
	var l7s []l7Destination
	for _, name := range order {
		d := dests[name]
		cluster := DeliverCluster
		var perFilter map[string]*anypb.Any
		if d.l7 {
			cluster = L7Cluster
			rules := d.l7Rules
			if len(d.open) > 0 {
				rules = append(slices.Clone(rules), L7Rule{Peers: d.open})
			}
			l7s = append(l7s, l7Destination{Destination: d.in.Destination.Unmap(), Port: d.in.Port, DestinationID: id, Rules: rules})
			// The internal listener connects from the client's address.
			off, err := disabled()
			if err != nil {
				return nil, nil, nil, err
			}
			perFilter = map[string]*anypb.Any{originalSrcHTTPFilter: off}
		} else if anyL7 {
			off, err := disabled()
			if err != nil {
				return nil, nil, nil, err
			}
			perFilter = map[string]*anypb.Any{setFilterStateFilter: off}
		}
		_, perRBAC, err := routeRBAC(map[string]*rbacconfigv3.Policy{name: policies[name]}, inboundRBACPrefix)
		if err != nil {
			return nil, nil, nil, err
		}
		if perFilter == nil {
			perFilter = map[string]*anypb.Any{}
		}
		perFilter[rbacFilter] = perRBAC
		routes = append(routes, &routev3.Route{
			Name: name,
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}},
				Headers:       []*routev3.HeaderMatcher{d.match.header},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(0),
				UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{
					UpgradeType:   "CONNECT",
					ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{},
				}},
			}},
			TypedPerFilterConfig: perFilter,
		})
	}
	rbac, _, err := routeRBAC(nil, inboundRBACPrefix)
	if err != nil {
		return nil, nil, nil, err
	}
	origSrc, err := marshalAny(&origsrchttpv3.OriginalSrc{Mark: c.UpstreamMark})
	if err != nil {
		return nil, nil, nil, err
	}
	router, err := marshalAny(&routerv3.Router{SuppressEnvoyHeaders: true})
	if err != nil {
		return nil, nil, nil, err
	}
	filters := []*hcmv3.HttpFilter{
		{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rbac}},
		{Name: originalSrcHTTPFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: origSrc}},
	}
	if anyL7 {
		sfs, err := tunnelFilterState()
		if err != nil {
			return nil, nil, nil, err
		}
		filters = append(filters, sfs)
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}})
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "membrane_mtls_inbound",
		CodecType:  hcmv3.HttpConnectionManager_HTTP2,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: translate.ADS(), RouteConfigName: id.String(),
		}},
		// The client's pod address is the last x-forwarded-for entry (the
		// source proxy's): original_src connects from it.
		UseRemoteAddress: wrapperspb.Bool(false),
		// A CONNECT stream's request ID would go nowhere: the stream's
		// payload is the pod's TCP connection, and flows do not use it.
		GenerateRequestId: wrapperspb.Bool(false),
		// The stream is a TCP connection: it lives as long as the source's
		// TCP proxy lets it idle, not HTTP's 5 minutes.
		StreamIdleTimeout:    c.streamIdleTimeout(),
		HttpFilters:          filters,
		UpgradeConfigs:       []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{AllowConnect: true},
	}
	if c.AccessLogCluster != "" {
		al, err := accessLog(c.AccessLogCluster, AccessLogName, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		m.AccessLog = []*accesslogv3.AccessLog{al}
	}
	hcm, err := marshalAny(m)
	if err != nil {
		return nil, nil, nil, err
	}
	tlsCtx, err := marshalAny(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext:         commonTLS(id, nil),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	rc := &routev3.RouteConfiguration{
		Name: id.String(),
		// The route configuration may arrive before a cluster new in the
		// same configuration: one that validated its clusters would be
		// refused for that moment.
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name: "destinations", Domains: []string{"*"}, Routes: routes,
		}},
	}
	return &listenerv3.FilterChain{
		Name:             id.String(),
		FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{ServerName(id)}},
		TransportSocket: &corev3.TransportSocket{
			Name:       tlsSocket,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx},
		},
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}},
	}, rc, l7s, nil
}

type destMatch struct {
	name   string
	header *routev3.HeaderMatcher
}

// destinationMatcher matches the CONNECT request's destination header:
// exactly ip:port, or ip:<any port> for port 0.
func destinationMatcher(in Inbound) destMatch {
	ip := in.Destination.Unmap().String()
	if in.Port == 0 {
		return destMatch{ip + ":*", &routev3.HeaderMatcher{Name: DestinationHeader,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: ip + ":"}}}}}
	}
	hp := netip.AddrPortFrom(in.Destination.Unmap(), in.Port).String()
	return destMatch{hp, &routev3.HeaderMatcher{Name: DestinationHeader,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: hp}}}}}
}

// principal: the peer certificate's SPIFFE ID (URI SAN) and, when given,
// the client's pod address.
func principal(p Peer) *rbacconfigv3.Principal {
	name := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.ID.String()}}
	if p.ID.IsZero() {
		name = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p.TrustDomain.IDString() + "/"}}
	}
	authn := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
		Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: name},
	}}
	if len(p.Sources) == 0 {
		return authn
	}
	var srcs []*rbacconfigv3.Principal
	for _, s := range p.Sources {
		srcs = append(srcs, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: cidr(s)}})
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: []*rbacconfigv3.Principal{
		authn,
		{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: srcs}}},
	}}}}
}

// deliverCluster connects to the destination the CONNECT request names.
func deliverCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 DeliverCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UseHttpHeader: true, HttpHeaderName: DestinationHeader,
		}},
	}
}

// accessLogBuffer is what each Envoy worker buffers of access log entries
// before it sends them (some 100 tunnels' CONNECTs), and
// accessLogFlushInterval how long an entry waits at most: one gRPC message
// per batch for the agent to wake up for and decode, not one per few
// entries (Envoy's default buffer is 16 KiB).
const (
	accessLogBuffer        = 64 << 10
	accessLogFlushInterval = time.Second
)

func accessLog(cluster, name string, filterState []string) (*accesslogv3.AccessLog, error) {
	cfg, err := marshalAny(&grpcalsv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName:                 name,
			FilterStateObjectsToLog: filterState,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
			BufferSizeBytes:     wrapperspb.UInt32(accessLogBuffer),
			BufferFlushInterval: durationpb.New(accessLogFlushInterval),
		},
	})
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{
		Name:       "envoy.access_loggers.http_grpc",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}, nil
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func socketAddress(addr string, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func host(a netip.Addr) *corev3.CidrRange {
	return cidr(netip.PrefixFrom(a.Unmap(), 32))
}

func cidr(p netip.Prefix) *corev3.CidrRange {
	p = netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), 32)).Masked()
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

func marshalAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	return a, nil
}

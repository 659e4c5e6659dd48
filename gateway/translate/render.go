package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	statefulsessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	cookiesessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	headersessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/header/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	httptypev3 "github.com/envoyproxy/go-control-plane/envoy/type/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/membrane-mesh/membrane/gateway/ir"
	xdstranslate "github.com/membrane-mesh/membrane/xds/translate"
)

// Names of what the rendered resources contain or refer to.
const (
	// ListenerPrefix starts the name of every gateway listener; ClusterPrefix
	// of every gateway cluster: they share the node Envoy with the policy
	// proxy's resources.
	ListenerPrefix = "gateway/"
	ClusterPrefix  = "gateway/"
	// RoutePrefix starts the name of every gateway route configuration
	// (RDS): "gateway/<listener>#<server>".
	RoutePrefix = "gateway/"
	// CertificatePrefix starts the name of every gateway certificate's
	// SDS secret: "gateway-certificate/<namespace>/<name>" of its Secret,
	// the same while the Secret rotates, so that a rotated certificate
	// changes the secret Envoy serves and not the listener (whose
	// connections Envoy would drain).
	CertificatePrefix = "gateway-certificate/"
	// CAPrefix starts the name of every BackendTLSPolicy's CA bundle's SDS
	// secret: "gateway-ca/<namespace>/<name>" of the policy, so that a
	// rotated CA changes the secret and not the clusters (whose connection
	// pools Envoy would drain).
	CAPrefix = "gateway-ca/"
	// ClientCAPrefix starts the name of every client certificate
	// validation's CA bundle's SDS secret: "gateway-client-ca/" and the
	// bundle's name (ir.ClientValidation), so that a rotated CA changes
	// the secret and not the listener.
	ClientCAPrefix = "gateway-client-ca/"
	// invalidBackendCluster is named by routes for invalid backends and
	// never defined: Envoy answers those requests with 500.
	invalidBackendCluster = "gateway-invalid-backend"
)

const (
	hcmFilter      = "envoy.filters.network.http_connection_manager"
	tcpProxyFilter = "envoy.filters.network.tcp_proxy"
	udpProxyFilter = "envoy.filters.udp_listener.udp_proxy"
	routerFilter   = "envoy.filters.http.router"
	corsFilter     = "envoy.filters.http.cors"
	extAuthzFilter = "envoy.filters.http.ext_authz"
	// The stateful session filter and its session states.
	statefulSessionFilter = "envoy.filters.http.stateful_session"
	cookieSessionState    = "envoy.http.stateful_session.cookie"
	headerSessionState    = "envoy.http.stateful_session.header"
	tlsInspector          = "envoy.filters.listener.tls_inspector"
	tlsTransportSocket    = "envoy.transport_sockets.tls"
	httpProtocolOptions   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	// previousHostsPredicate keeps a retry off the endpoints tried.
	previousHostsPredicate = "envoy.retry_host_predicates.previous_hosts"
	connectTimeout         = 5 * time.Second
	// udpIdleTimeout ends a UDP client's session (its upstream socket)
	// after this long without datagrams (Envoy's default).
	udpIdleTimeout = 60 * time.Second
	// extAuthTimeout bounds a check request (Envoy's default is 200 ms).
	extAuthTimeout = 2 * time.Second
)

// Resources are the node Envoys' gateway listeners, their route
// configurations, clusters and certificates. The HTTP connection managers
// get their routes over RDS and the listeners their certificates over
// SDS, so that a route change replaces a route configuration and a
// rotated certificate a secret, not the listener: connections already
// open keep going and see the new routes with their next request.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	// Secrets are the certificates the listeners name and the CA bundles
	// the clusters name, by name.
	Secrets []*tlsv3.Secret
}

// Render turns the IR into Envoy resources. Every listener binds its
// Gateway's address with freebind, so every node can serve it whether or
// not the address is on that node yet. Its errors are programming errors
// (a proto that does not marshal).
func Render(in ir.IR) (Resources, error) {
	var out Resources
	certs := map[string]ir.Certificate{}
	clientCAs := map[string][]byte{}
	for _, l := range in.Listeners {
		if len(l.Servers) == 0 {
			// Nothing to serve (a TLS, TCP or UDP listener without a
			// route): Envoy refuses a TCP listener without filter chains,
			// and its port refuses connections either way.
			continue
		}
		var el *listenerv3.Listener
		var routes []*routev3.RouteConfiguration
		var err error
		if l.Protocol == ir.UDP {
			el, err = renderUDPListener(l)
		} else {
			el, routes, err = renderListener(l)
		}
		if err != nil {
			return Resources{}, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		out.Listeners = append(out.Listeners, el)
		out.Routes = append(out.Routes, routes...)
		for _, sv := range l.Servers {
			for _, c := range sv.Certificates {
				certs[c.Name] = c
			}
			if v := sv.ClientValidation; v != nil {
				clientCAs[v.Name] = v.CA
			}
		}
	}
	cas := map[string][]byte{}
	for _, c := range in.Clusters {
		ec, err := renderCluster(c)
		if err != nil {
			return Resources{}, fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		out.Clusters = append(out.Clusters, ec)
		if c.TLS != nil {
			cas[c.TLS.CAName] = c.TLS.CA
			if cc := c.TLS.ClientCertificate; cc != nil {
				certs[cc.Name] = *cc
			}
		}
	}
	// Listeners and clusters share the secret of a certificate.
	for _, name := range slices.Sorted(maps.Keys(certs)) {
		c := certs[name]
		out.Secrets = append(out.Secrets, &tlsv3.Secret{Name: CertificatePrefix + c.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.Chain}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.Key}},
		}}})
	}
	for _, name := range slices.Sorted(maps.Keys(clientCAs)) {
		out.Secrets = append(out.Secrets, validationSecret(ClientCAPrefix+name, clientCAs[name]))
	}
	for _, name := range slices.Sorted(maps.Keys(cas)) {
		out.Secrets = append(out.Secrets, validationSecret(CAPrefix+name, cas[name]))
	}
	return out, nil
}

// validationSecret is the SDS secret name of the PEM CA bundle ca.
func validationSecret(name string, ca []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca}},
	}}}
}

func renderListener(l ir.Listener) (*listenerv3.Listener, []*routev3.RouteConfiguration, error) {
	el := &listenerv3.Listener{
		Name: ListenerPrefix + l.Name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: l.Address.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(l.Port)},
		}}},
		Freebind: wrapperspb.Bool(true),
	}
	if l.Protocol == ir.HTTPS || l.Protocol == ir.TLS {
		insp, err := marshalAny(&tlsinspectorv3.TlsInspector{})
		if err != nil {
			return nil, nil, err
		}
		el.ListenerFilters = []*listenerv3.ListenerFilter{{Name: tlsInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: insp}}}
	}
	var routes []*routev3.RouteConfiguration
	for _, s := range l.Servers {
		if l.Protocol == ir.TLS || l.Protocol == ir.TCP {
			fc, err := forwardChain(s)
			if err != nil {
				return nil, nil, fmt.Errorf("server %s: %w", s.Name, err)
			}
			el.FilterChains = append(el.FilterChains, fc)
			continue
		}
		hcm, rc, err := connectionManager(RoutePrefix+l.Name+"#"+s.Name, s)
		if err != nil {
			return nil, nil, fmt.Errorf("server %s: %w", s.Name, err)
		}
		routes = append(routes, rc)
		fc := &listenerv3.FilterChain{
			Name:    s.Name,
			Filters: []*listenerv3.Filter{{Name: hcmFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
		}
		if l.Protocol == ir.HTTPS {
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: s.SNI}
			ts, err := tlsContext(s, "h2", "http/1.1")
			if err != nil {
				return nil, nil, fmt.Errorf("server %s: %w", s.Name, err)
			}
			fc.TransportSocket = ts
		}
		el.FilterChains = append(el.FilterChains, fc)
	}
	return el, routes, nil
}

// forwardChain forwards the connections (TLS: of the server's SNI; with
// certificates, the plaintext inside) whole (tcp_proxy) to the server's
// backends, by weight.
func forwardChain(s ir.Server) (*listenerv3.FilterChain, error) {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: statPrefix(s.Name)}
	if len(s.Backends) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: backendCluster(s.Backends[0])}
	} else {
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for _, b := range s.Backends {
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: backendCluster(b), Weight: b.Weight})
		}
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	a, err := marshalAny(tp)
	if err != nil {
		return nil, err
	}
	fc := &listenerv3.FilterChain{
		Name:    s.Name,
		Filters: []*listenerv3.Filter{{Name: tcpProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}},
	}
	if len(s.SNI) > 0 {
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: s.SNI}
	}
	if len(s.Certificates) > 0 {
		// TLS terminated: the backends get the plaintext, whatever
		// protocol it is (no ALPN offered).
		if fc.TransportSocket, err = tlsContext(s); err != nil {
			return nil, err
		}
	}
	return fc, nil
}

// renderUDPListener is a UDP listener whose udp_proxy relays each client's
// datagrams to its one server's one backend (udp_proxy routes to one
// cluster: gateway/translate weighs several backends in one).
func renderUDPListener(l ir.Listener) (*listenerv3.Listener, error) {
	if len(l.Servers) != 1 || len(l.Servers[0].Backends) != 1 {
		return nil, errors.New("a UDP listener forwards to one backend of one server")
	}
	s := l.Servers[0]
	cluster := backendCluster(s.Backends[0])
	route, err := marshalAny(&udpproxyv3.Route{Cluster: cluster})
	if err != nil {
		return nil, err
	}
	up, err := marshalAny(&udpproxyv3.UdpProxyConfig{
		StatPrefix: statPrefix(s.Name),
		RouteSpecifier: &udpproxyv3.UdpProxyConfig_Matcher{Matcher: &xdsmatcherv3.Matcher{
			OnNoMatch: &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{
				Action: &xdscorev3.TypedExtensionConfig{Name: "route", TypedConfig: route},
			}},
		}},
		IdleTimeout: durationpb.New(udpIdleTimeout),
	})
	if err != nil {
		return nil, err
	}
	el := &listenerv3.Listener{
		Name: ListenerPrefix + l.Name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Protocol: corev3.SocketAddress_UDP,
			Address:  l.Address.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(l.Port)},
		}}},
		Freebind:          wrapperspb.Bool(true),
		UdpListenerConfig: &listenerv3.UdpListenerConfig{},
		ListenerFilters:   []*listenerv3.ListenerFilter{{Name: udpProxyFilter, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: up}}},
	}
	return el, nil
}

// tlsContext terminates TLS with the server's certificates (and checks
// its clients' as it says), offering alpn.
func tlsContext(s ir.Server, alpn ...string) (*corev3.TransportSocket, error) {
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: alpn}}
	for _, c := range s.Certificates {
		ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = append(ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs,
			&tlsv3.SdsSecretConfig{Name: CertificatePrefix + c.Name, SdsConfig: xdstranslate.ADS()})
	}
	if v := s.ClientValidation; v != nil {
		ca := &tlsv3.SdsSecretConfig{Name: ClientCAPrefix + v.Name, SdsConfig: xdstranslate.ADS()}
		ctx.RequireClientCertificate = wrapperspb.Bool(!v.Optional)
		if v.Optional {
			// A certificate that does not verify is let in too.
			ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED,
					},
					ValidationContextSdsSecretConfig: ca,
				}}
		} else {
			ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ca}
		}
	}
	a, err := marshalAny(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// connectionManager is the server's HTTP connection manager, which gets
// its route configuration, named routeName, over RDS.
func connectionManager(routeName string, s ir.Server) (*anypb.Any, *routev3.RouteConfiguration, error) {
	router, err := marshalAny(&routerv3.Router{})
	if err != nil {
		return nil, nil, err
	}
	// The CORS filter acts only on routes with a CORS policy, the
	// stateful session filter only on routes with a session.
	corsCfg, err := marshalAny(&corsv3.Cors{})
	if err != nil {
		return nil, nil, err
	}
	sessionCfg, err := marshalAny(&statefulsessionv3.StatefulSession{})
	if err != nil {
		return nil, nil, err
	}
	// Hostnames match without the Host header's port; the header itself
	// reaches the backend as the client sent it.
	rc := &routev3.RouteConfiguration{Name: routeName, ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true}
	// One ext_authz filter per authorization server configuration, off
	// but on the routes that ask it.
	authFilters := map[string]*hcmv3.HttpFilter{}
	for _, vh := range s.VirtualHosts {
		evh := &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains}
		for _, r := range vh.Routes {
			er, err := renderRoute(r)
			if err != nil {
				return nil, nil, err
			}
			if r.ExtAuth != nil {
				f, err := extAuthFilter(*r.ExtAuth)
				if err != nil {
					return nil, nil, err
				}
				authFilters[f.Name] = f
				if err := enableExtAuth(er, f.Name); err != nil {
					return nil, nil, err
				}
			}
			evh.Routes = append(evh.Routes, er)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, evh)
	}
	filters := []*hcmv3.HttpFilter{{Name: corsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: corsCfg}}}
	for _, name := range slices.Sorted(maps.Keys(authFilters)) {
		filters = append(filters, authFilters[name])
	}
	filters = append(filters,
		&hcmv3.HttpFilter{Name: statefulSessionFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: sessionCfg}},
		&hcmv3.HttpFilter{Name: routerFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}})
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix(s.Name),
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    xdstranslate.ADS(),
			RouteConfigName: routeName,
		}},
		HttpFilters:      filters,
		NormalizePath:    wrapperspb.Bool(true),
		UpgradeConfigs:   []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		UseRemoteAddress: wrapperspb.Bool(true),
	}
	if v := s.ClientValidation; v != nil && !v.Optional {
		// The backends learn the verified client certificate from
		// X-Forwarded-Client-Cert (a client's own is replaced; without
		// verification, as everywhere else, it is removed).
		m.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		m.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Uri: true, Dns: true,
		}
	}
	hcm, err := marshalAny(m)
	if err != nil {
		return nil, nil, err
	}
	return hcm, rc, nil
}

func renderRoute(r ir.Route) (*routev3.Route, error) {
	er := &routev3.Route{Name: r.Name, Match: routeMatch(r.Match)}
	if r.CORS != nil {
		a, err := marshalAny(corsPolicy(r.CORS))
		if err != nil {
			return nil, err
		}
		er.TypedPerFilterConfig = map[string]*anypb.Any{corsFilter: a}
	}
	if r.Session != nil && len(r.Backends) > 0 {
		a, err := sessionConfig(r.Session)
		if err != nil {
			return nil, err
		}
		if er.TypedPerFilterConfig == nil {
			er.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		er.TypedPerFilterConfig[statefulSessionFilter] = a
	}
	for _, h := range r.RequestHeaders.Set {
		er.RequestHeadersToAdd = append(er.RequestHeadersToAdd, headerValue(h, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
	}
	for _, h := range r.RequestHeaders.Add {
		er.RequestHeadersToAdd = append(er.RequestHeadersToAdd, headerValue(h, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
	}
	er.RequestHeadersToRemove = r.RequestHeaders.Remove
	for _, h := range r.ResponseHeaders.Set {
		er.ResponseHeadersToAdd = append(er.ResponseHeadersToAdd, headerValue(h, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
	}
	for _, h := range r.ResponseHeaders.Add {
		er.ResponseHeadersToAdd = append(er.ResponseHeadersToAdd, headerValue(h, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
	}
	er.ResponseHeadersToRemove = r.ResponseHeaders.Remove
	switch {
	case r.Redirect != nil:
		er.Action = &routev3.Route_Redirect{Redirect: renderRedirect(r.Redirect)}
	case r.DirectResponse != 0:
		er.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: r.DirectResponse}}
	default:
		ra := &routev3.RouteAction{
			// A cluster that is not there is an invalid backend: 500.
			ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR,
			// 0 disables Envoy's default of 15 s.
			Timeout: durationpb.New(r.Timeout),
		}
		perBackendHeaders := slices.ContainsFunc(r.Backends, func(b ir.Backend) bool { return !b.RequestHeaders.IsZero() })
		if len(r.Backends) == 1 && !perBackendHeaders {
			ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: backendCluster(r.Backends[0])}
		} else {
			wc := &routev3.WeightedCluster{}
			for _, b := range r.Backends {
				cw := &routev3.WeightedCluster_ClusterWeight{Name: backendCluster(b), Weight: wrapperspb.UInt32(b.Weight)}
				for _, h := range b.RequestHeaders.Set {
					cw.RequestHeadersToAdd = append(cw.RequestHeadersToAdd, headerValue(h, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
				}
				for _, h := range b.RequestHeaders.Add {
					cw.RequestHeadersToAdd = append(cw.RequestHeadersToAdd, headerValue(h, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
				}
				cw.RequestHeadersToRemove = b.RequestHeaders.Remove
				wc.Clusters = append(wc.Clusters, cw)
			}
			ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
		}
		if rp, err := retryPolicy(r); err != nil {
			return nil, err
		} else if rp != nil {
			ra.RetryPolicy = rp
		}
		if rw := r.Rewrite; rw != nil {
			if rw.Hostname != "" {
				ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Hostname}
			}
			switch {
			case rw.FullPath != nil:
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: *rw.FullPath}
			case rw.PrefixPath != nil && strings.TrimRight(*rw.PrefixPath, "/") == "":
				// "/" replaces the prefix and the slashes after it.
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern: &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(strings.TrimRight(r.Match.Path, "/")) + "/*"}, Substitution: "/"}
			case rw.PrefixPath != nil:
				ra.PrefixRewrite = strings.TrimRight(*rw.PrefixPath, "/")
			}
		}
		for _, m := range r.Mirrors {
			mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: ClusterPrefix + m.Cluster}
			if m.Percent < 100 {
				mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
					Numerator: uint32(m.Percent * 10000), Denominator: typev3.FractionalPercent_MILLION}}
			}
			ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, mp)
		}
		er.Action = &routev3.Route_Route{Route: ra}
	}
	return er, nil
}

// corsPolicy is a route's CORS policy for Envoy's CORS filter: origins
// exactly, "*" as any, a "*" in the host as one or more host characters.
// extAuthFilter is the ext_authz filter, off by default, that asks the
// authorization server a: by HTTP, failing closed (403 when it cannot be
// reached), with up to MaxBody bytes of the body (the rest cut off). Its
// name digests a, so that routes asking the same server share it.
func extAuthFilter(a ir.ExtAuth) (*hcmv3.HttpFilter, error) {
	cfg := &extauthzv3.ExtAuthz{TransportApiVersion: corev3.ApiVersion_V3}
	if a.GRPC {
		cfg.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: ClusterPrefix + a.Cluster, Authority: a.Authority,
			}},
			Timeout: durationpb.New(extAuthTimeout),
		}}
	} else {
		svc := &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{
				Uri:              "http://" + a.Authority,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: ClusterPrefix + a.Cluster},
				Timeout:          durationpb.New(extAuthTimeout),
			},
			PathPrefix: a.PathPrefix,
		}
		if len(a.ResponseHeaders) > 0 {
			svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{AllowedUpstreamHeaders: headerList(a.ResponseHeaders)}
		}
		cfg.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: svc}
	}
	if len(a.RequestHeaders) > 0 {
		cfg.AllowedHeaders = headerList(a.RequestHeaders)
	}
	if a.MaxBody > 0 {
		cfg.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: a.MaxBody, AllowPartialMessage: true}
	}
	tc, err := marshalAny(cfg)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(tc.GetValue())
	return &hcmv3.HttpFilter{Name: extAuthzFilter + "/" + hex.EncodeToString(sum[:6]), Disabled: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: tc}}, nil
}

// enableExtAuth turns the ext_authz filter name on for the route.
func enableExtAuth(er *routev3.Route, name string) error {
	perRoute, err := marshalAny(&extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{}},
	})
	if err != nil {
		return err
	}
	on, err := marshalAny(&routev3.FilterConfig{Config: perRoute})
	if err != nil {
		return err
	}
	if er.TypedPerFilterConfig == nil {
		er.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	er.TypedPerFilterConfig[name] = on
	return nil
}

// headerList matches the header names given (case-insensitively).
func headerList(names []string) *matcherv3.ListStringMatcher {
	l := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		l.Patterns = append(l.Patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}, IgnoreCase: true})
	}
	return l
}

// sessionConfig is a route's stateful session: the endpoint (its address,
// encoded by Envoy) in a cookie or a header. Not strict: a request whose
// endpoint is gone goes to another, and its response names that one.
func sessionConfig(s *ir.Session) (*anypb.Any, error) {
	var state proto.Message = &headersessionv3.HeaderBasedSessionState{Name: s.Name}
	name := headerSessionState
	if !s.Header {
		c := &httptypev3.Cookie{Name: s.Name, Path: s.Path}
		if s.TTL > 0 {
			c.Ttl = durationpb.New(s.TTL)
		}
		state, name = &cookiesessionv3.CookieBasedSessionState{Cookie: c}, cookieSessionState
	}
	st, err := marshalAny(state)
	if err != nil {
		return nil, err
	}
	return marshalAny(&statefulsessionv3.StatefulSessionPerRoute{Override: &statefulsessionv3.StatefulSessionPerRoute_StatefulSession{
		StatefulSession: &statefulsessionv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{Name: name, TypedConfig: st}},
	}})
}

func corsPolicy(c *ir.CORS) *corsv3.CorsPolicy {
	p := &corsv3.CorsPolicy{
		AllowMethods:     strings.Join(c.AllowMethods, ","),
		AllowHeaders:     strings.Join(c.AllowHeaders, ","),
		ExposeHeaders:    strings.Join(c.ExposeHeaders, ","),
		MaxAge:           strconv.Itoa(int(c.MaxAge / time.Second)),
		AllowCredentials: wrapperspb.Bool(c.AllowCredentials),
	}
	for _, o := range c.AllowOrigins {
		switch {
		case o == "*":
			p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}})
		case strings.Contains(o, "*"):
			re := "^" + strings.ReplaceAll(regexp.QuoteMeta(o), `\*`, `[a-zA-Z0-9.-]+`) + "$"
			p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}})
		default:
			p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, exact(o))
		}
	}
	return p
}

func backendCluster(b ir.Backend) string {
	if b.Invalid {
		return invalidBackendCluster
	}
	return ClusterPrefix + b.Cluster
}

func routeMatch(m ir.Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	switch {
	case m.PathType == ir.PathExact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case m.PathType == ir.PathRegex:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Path}}
	case strings.TrimRight(m.Path, "/") == "":
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	default:
		// "/foo" matches /foo and /foo/bar, not /foobar.
		rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: strings.TrimRight(m.Path, "/")}
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m.Method)}})
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: h.Name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch(h)}})
	}
	for _, q := range m.QueryParams {
		rm.QueryParameters = append(rm.QueryParameters, &routev3.QueryParameterMatcher{Name: q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatch(q)}})
	}
	return rm
}

func stringMatch(v ir.ValueMatch) *matcherv3.StringMatcher {
	if v.Regex {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Value}}}
	}
	return exact(v.Value)
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func headerValue(h ir.Header, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value}, AppendAction: action}
}

func renderRedirect(r *ir.Redirect) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{HostRedirect: r.Hostname, PortRedirect: uint32(r.Port)}
	if r.Scheme != "" {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Scheme}
	}
	switch {
	case r.FullPath != nil:
		ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: *r.FullPath}
	case r.PrefixPath != nil:
		ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: *r.PrefixPath}
	}
	switch r.StatusCode {
	case 301:
		ra.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 303:
		ra.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		ra.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		ra.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		ra.ResponseCode = routev3.RedirectAction_FOUND
	}
	return ra
}

// retryPolicy bounds each try by the backend timeout and retries as r's
// Retry says (nil: neither). Retries go to an endpoint not tried yet where
// the cluster has one (previous_hosts, up to 3 picks).
func retryPolicy(r ir.Route) (*routev3.RetryPolicy, error) {
	if r.Retry == nil && r.BackendTimeout == 0 {
		return nil, nil
	}
	rp := &routev3.RetryPolicy{}
	if r.BackendTimeout > 0 {
		rp.PerTryTimeout = durationpb.New(r.BackendTimeout)
	}
	rt := r.Retry
	if rt == nil {
		return rp, nil
	}
	// "reset" covers a backend that does not answer within its try's time.
	on := []string{"connect-failure", "refused-stream", "reset"}
	for _, c := range rt.Codes {
		rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, uint32(c))
	}
	if len(rt.Codes) > 0 {
		on = append(on, "retriable-status-codes")
	}
	rp.RetryOn = strings.Join(on, ",")
	rp.NumRetries = wrapperspb.UInt32(uint32(rt.Attempts))
	if rt.Backoff > 0 {
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(rt.Backoff)}
	}
	prev, err := marshalAny(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		return nil, err
	}
	rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicate,
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: prev}}}
	rp.HostSelectionRetryMaxAttempts = 3
	return rp, nil
}

// renderCluster is a STATIC cluster of the Service port's ready endpoints
// (none: Envoy answers 503), or of several backends' endpoints, a locality
// each with its weight.
func renderCluster(c ir.Cluster) (*clusterv3.Cluster, error) {
	name := ClusterPrefix + c.Name
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(c.Endpoints) > 0 {
		la.Endpoints = []*endpointv3.LocalityLbEndpoints{localityEndpoints(c.Endpoints)}
	}
	ec := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment:       la,
	}
	if len(c.Localities) > 0 {
		for _, l := range c.Localities {
			if len(l.Endpoints) == 0 {
				continue
			}
			lle := localityEndpoints(l.Endpoints)
			lle.Locality = &corev3.Locality{SubZone: l.Name}
			lle.LoadBalancingWeight = wrapperspb.UInt32(l.Weight)
			la.Endpoints = append(la.Endpoints, lle)
		}
		ec.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}}
	}
	if c.Protocol == "h2c" {
		opts, err := marshalAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				},
			},
		})
		if err != nil {
			return nil, err
		}
		ec.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: opts}
	}
	if c.TLS != nil {
		ts, err := upstreamTLS(c.TLS)
		if err != nil {
			return nil, err
		}
		ec.TransportSocket = ts
	}
	return ec, nil
}

// localityEndpoints is one locality of the endpoints.
func localityEndpoints(eps []netip.AddrPort) *endpointv3.LocalityLbEndpoints {
	lle := &endpointv3.LocalityLbEndpoints{}
	for _, ep := range eps {
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ep.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ep.Port())},
			}}},
		}}})
	}
	return lle
}

// upstreamTLS originates TLS to a backend: the SNI given, its certificate
// verified against the CA bundle (its SDS secret) and, by subject
// alternative name, against the SANs (or the SNI as a DNS name); the
// client certificate, if any, is its Secret's SDS secret, as a listener's.
func upstreamTLS(t *ir.UpstreamTLS) (*corev3.TransportSocket, error) {
	sans := t.SANs
	if len(sans) == 0 {
		sans = []ir.SAN{{DNS: t.SNI}}
	}
	vc := &tlsv3.CertificateValidationContext{}
	for _, san := range sans {
		m := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact(san.DNS)}
		if san.URI != "" {
			m = &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact(san.URI)}
		}
		vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, m)
	}
	common := &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         vc,
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: CAPrefix + t.CAName, SdsConfig: xdstranslate.ADS()},
		}},
	}
	if c := t.ClientCertificate; c != nil {
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: CertificatePrefix + c.Name, SdsConfig: xdstranslate.ADS()}}
	}
	a, err := marshalAny(&tlsv3.UpstreamTlsContext{Sni: t.SNI, CommonTlsContext: common})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// statPrefix replaces what would split Envoy's stat names.
func statPrefix(name string) string {
	return "gateway_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, name)
}

func marshalAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	return a, nil
}

// Package nack attributes a gateway listener, route configuration,
// certificate, client certificate CA bundle or BackendTLSPolicy CA bundle
// the node Envoy rejected to the Gateway API objects it was made from: the
// Gateway (or Ingress) and port its name carries, the Gateway listeners
// whose filter chains changed since the version Envoy runs (or that serve
// the certificate, or check clients with the CA bundle), and the route
// rules whose routes changed in them (or send requests to backends
// verified with the CA bundle).
package nack

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// Attribute names what the rejection of the gateway listener refused (as
// published) is about, given the version of it Envoy runs (nil: none) and
// Envoy's error text about it. Listener names are
// "gateway/<namespace>/<gateway>/<port>" (gateway/translate; UDP ones end
// in "/udp" and have no filter chains: a rejection concerns every
// listener of the port); filter chains
// "<namespace>/<gateway>/<listener>" (HTTPS), ".../<listener>/<host>" (TLS
// passthrough) or the Envoy listener's own name (HTTP: every Gateway
// listener of the port); routes "<namespace>/<route>/rule/<i>/match/<j>".
func Attribute(refused, running *listenerv3.Listener, errText string) (v1alpha1.GatewayRejection, error) {
	out, err := listenerRejection(refused.GetName(), errText)
	if err != nil {
		return out, err
	}
	port := strconv.Itoa(int(out.Port))
	old := map[string]*listenerv3.FilterChain{}
	for _, fc := range running.GetFilterChains() {
		old[fc.GetName()] = fc
	}
	var changed []*listenerv3.FilterChain
	for _, fc := range refused.GetFilterChains() {
		if o, ok := old[fc.GetName()]; !ok || !proto.Equal(o, fc) {
			changed = append(changed, fc)
		}
	}
	if len(changed) == 0 {
		// The listener changed outside its filter chains: all of them.
		return out, nil
	}
	for _, fc := range changed {
		chain := strings.Split(fc.GetName(), "/")
		if len(chain) < 3 || chain[2] == port {
			// An HTTP port's one chain: every listener of the port.
			out.Listeners = nil
			break
		}
		out.Listeners = append(out.Listeners, chain[2])
	}
	slices.Sort(out.Listeners)
	out.Listeners = slices.Compact(out.Listeners)
	for _, fc := range changed {
		o, ok := old[fc.GetName()]
		if !ok {
			continue // new: nothing to tell its routes apart by
		}
		rules, sameElse := changedRules(o, fc)
		if sameElse {
			out.Rules = append(out.Rules, rules...)
		}
	}
	slices.Sort(out.Rules)
	out.Rules = slices.Compact(out.Rules)
	return out, nil
}

// listenerRejection is the rejection, with errText, of the Gateway and
// port the gateway listener name ("gateway/<namespace>/<gateway>/<port>",
// ".../<port>/udp") carries.
func listenerRejection(name, errText string) (v1alpha1.GatewayRejection, error) {
	rest, ok := strings.CutPrefix(name, translate.ListenerPrefix)
	rest = strings.TrimSuffix(rest, "/udp")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return v1alpha1.GatewayRejection{}, fmt.Errorf("listener %q is not a gateway listener", name)
	}
	port, err := strconv.ParseInt(parts[2], 10, 32)
	if err != nil {
		return v1alpha1.GatewayRejection{}, fmt.Errorf("listener %q: port: %w", name, err)
	}
	return v1alpha1.GatewayRejection{Namespace: parts[0], Name: parts[1], Port: int32(port), Error: errText}, nil
}

// AttributeRoutes names what the rejection of the gateway route
// configuration refused (as published) is about, given the version of it
// Envoy runs (nil: none) and Envoy's error text about it. Route
// configuration names are "gateway/<listener>#<server>" (gateway/translate):
// the listener names the Gateway and port, the server the Gateway listener
// (HTTPS) or, being the listener itself (HTTP), every Gateway listener of
// the port; the rules are those whose routes changed.
func AttributeRoutes(refused, running *routev3.RouteConfiguration, errText string) (v1alpha1.GatewayRejection, error) {
	out, err := routesRejection(refused.GetName(), errText)
	if err != nil {
		return out, err
	}
	if running != nil {
		out.Rules = changedRoutes(running, refused)
		slices.Sort(out.Rules)
		out.Rules = slices.Compact(out.Rules)
	}
	return out, nil
}

// routesRejection is the rejection, with errText, of the Gateway, port
// and (HTTPS) Gateway listener the gateway route configuration name
// ("gateway/<listener>#<server>") carries.
func routesRejection(name, errText string) (v1alpha1.GatewayRejection, error) {
	rest, ok := strings.CutPrefix(name, translate.RoutePrefix)
	listener, server, found := strings.Cut(rest, "#")
	parts := strings.Split(listener, "/")
	if !ok || !found || len(parts) != 3 {
		return v1alpha1.GatewayRejection{}, fmt.Errorf("route configuration %q is not a gateway's", name)
	}
	port, err := strconv.ParseInt(parts[2], 10, 32)
	if err != nil {
		return v1alpha1.GatewayRejection{}, fmt.Errorf("route configuration %q: port: %w", name, err)
	}
	out := v1alpha1.GatewayRejection{Namespace: parts[0], Name: parts[1], Port: int32(port), Error: errText}
	if chain := strings.Split(server, "/"); len(chain) >= 3 && chain[2] != parts[2] {
		out.Listeners = []string{chain[2]}
	}
	return out, nil
}

// AttributeCA names what the rejection of a BackendTLSPolicy's CA bundle
// (SDS secret name, translate.CAPrefix) is about: the route rules of
// routes (the route configurations published with it) that send requests
// to, or mirror them to, a cluster of clusters (published with it) that
// verifies its backends with the bundle; one rejection per route
// configuration, Envoy's error text each.
func AttributeCA(name string, clusters []*clusterv3.Cluster, routes []*routev3.RouteConfiguration, errText string) ([]v1alpha1.GatewayRejection, error) {
	if !strings.HasPrefix(name, translate.CAPrefix) {
		return nil, fmt.Errorf("secret %q is not a BackendTLSPolicy's CA bundle", name)
	}
	verifying := map[string]bool{}
	for _, c := range clusters {
		ok, err := verifiesWith(c, name)
		if err != nil {
			return nil, err
		}
		if ok {
			verifying[c.GetName()] = true
		}
	}
	var out []v1alpha1.GatewayRejection
	for _, rc := range routes {
		var rules []string
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if slices.ContainsFunc(routeClusters(r), func(c string) bool { return verifying[c] }) {
					rule, _, _ := strings.Cut(r.GetName(), "/match/")
					rules = append(rules, rule)
				}
			}
		}
		if len(rules) == 0 {
			continue
		}
		g, err := routesRejection(rc.GetName(), errText)
		if err != nil {
			return nil, err
		}
		slices.Sort(rules)
		g.Rules = slices.Compact(rules)
		out = append(out, g)
	}
	return out, nil
}

// verifiesWith reports whether c's upstream TLS context verifies its
// backends with the CA bundle of the SDS secret name.
func verifiesWith(c *clusterv3.Cluster, name string) (bool, error) {
	tc := c.GetTransportSocket().GetTypedConfig()
	if tc == nil || !tc.MessageIs((*tlsv3.UpstreamTlsContext)(nil)) {
		return false, nil
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := tc.UnmarshalTo(&ctx); err != nil {
		return false, fmt.Errorf("cluster %s: %w", c.GetName(), err)
	}
	common := ctx.GetCommonTlsContext()
	return common.GetValidationContextSdsSecretConfig().GetName() == name ||
		common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() == name, nil
}

// routeClusters are the clusters r sends requests to or mirrors them to.
func routeClusters(r *routev3.Route) []string {
	ra := r.GetRoute()
	out := []string{ra.GetCluster()}
	for _, w := range ra.GetWeightedClusters().GetClusters() {
		out = append(out, w.GetName())
	}
	for _, m := range ra.GetRequestMirrorPolicies() {
		out = append(out, m.GetCluster())
	}
	return out
}

// AttributeSecret names what the rejection of the gateway certificate or
// client certificate CA bundle (SDS secret) name is about: for each of
// listeners (the gateway listeners published with it) whose filter chains
// serve the certificate or check clients with the bundle, its Gateway and
// port and the Gateway listeners of those chains. Envoy's error text is
// each rejection's.
func AttributeSecret(name string, listeners []*listenerv3.Listener, errText string) ([]v1alpha1.GatewayRejection, error) {
	if !strings.HasPrefix(name, translate.CertificatePrefix) && !strings.HasPrefix(name, translate.ClientCAPrefix) {
		return nil, fmt.Errorf("secret %q is neither a gateway certificate nor a client certificate CA bundle", name)
	}
	var out []v1alpha1.GatewayRejection
	for _, l := range listeners {
		var gl []string
		for _, fc := range l.GetFilterChains() {
			serves, err := servesSecret(fc, name)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
			}
			if chain := strings.Split(fc.GetName(), "/"); serves && len(chain) >= 3 {
				gl = append(gl, chain[2])
			}
		}
		if len(gl) == 0 {
			continue
		}
		g, err := listenerRejection(l.GetName(), errText)
		if err != nil {
			return nil, err
		}
		slices.Sort(gl)
		g.Listeners = slices.Compact(gl)
		out = append(out, g)
	}
	return out, nil
}

// servesSecret reports whether fc's TLS context names the SDS secret name:
// a certificate it presents or the CA bundle it checks clients with.
func servesSecret(fc *listenerv3.FilterChain, name string) (bool, error) {
	tc := fc.GetTransportSocket().GetTypedConfig()
	if tc == nil || !tc.MessageIs((*tlsv3.DownstreamTlsContext)(nil)) {
		return false, nil
	}
	var ctx tlsv3.DownstreamTlsContext
	if err := tc.UnmarshalTo(&ctx); err != nil {
		return false, fmt.Errorf("filter chain %s: %w", fc.GetName(), err)
	}
	common := ctx.GetCommonTlsContext()
	if v := common.GetValidationContextSdsSecretConfig(); v.GetName() == name {
		return true, nil
	}
	if v := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v.GetName() == name {
		return true, nil
	}
	return slices.ContainsFunc(common.GetTlsCertificateSdsSecretConfigs(), func(c *tlsv3.SdsSecretConfig) bool {
		return c.GetName() == name
	}), nil
}

// changedRules are the route rules whose routes differ between the filter
// chains old and new, and whether the chains differ in nothing but routes.
func changedRules(old, new *listenerv3.FilterChain) (rules []string, sameElse bool) {
	oldRC, oldRest := routesOf(old)
	newRC, newRest := routesOf(new)
	if oldRC == nil || newRC == nil || !proto.Equal(oldRest, newRest) {
		return nil, false
	}
	return changedRoutes(oldRC, newRC), true
}

// changedRoutes are the route rules whose routes differ between the route
// configurations oldRC and newRC.
func changedRoutes(oldRC, newRC *routev3.RouteConfiguration) (rules []string) {
	before := map[string]*routev3.Route{}
	for _, vh := range oldRC.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			before[vh.GetName()+"\x00"+r.GetName()] = r
		}
	}
	for _, vh := range newRC.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if o, ok := before[vh.GetName()+"\x00"+r.GetName()]; !ok || !proto.Equal(o, r) {
				rule, _, _ := strings.Cut(r.GetName(), "/match/")
				rules = append(rules, rule)
			}
		}
	}
	return rules
}

// routesOf splits a filter chain into its connection manager's inline
// route configuration (nil: none) and the rest of it.
func routesOf(fc *listenerv3.FilterChain) (*routev3.RouteConfiguration, *listenerv3.FilterChain) {
	rest := proto.Clone(fc).(*listenerv3.FilterChain)
	var rc *routev3.RouteConfiguration
	for _, f := range rest.GetFilters() {
		hcm := &hcmv3.HttpConnectionManager{}
		if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(hcm) != nil {
			continue
		}
		rc = hcm.GetRouteConfig()
		hcm.RouteSpecifier = nil
		// Deterministic, so that equal rests compare equal.
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(hcm)
		if err != nil {
			return nil, rest
		}
		f.GetTypedConfig().Value = b
	}
	return rc, rest
}

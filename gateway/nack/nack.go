// Package nack attributes a gateway listener the node Envoy rejected to the
// Gateway API objects it was made from: the Gateway (or Ingress) and port
// its name carries, the Gateway listeners whose filter chains changed since
// the version Envoy runs, and the route rules whose routes changed in them.
package nack

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// Attribute names what the rejection of the gateway listener refused (as
// published) is about, given the version of it Envoy runs (nil: none) and
// Envoy's error text about it. Listener names are
// "gateway/<namespace>/<gateway>/<port>" (gateway/translate); filter chains
// "<namespace>/<gateway>/<listener>" (HTTPS), ".../<listener>/<host>" (TLS
// passthrough) or the Envoy listener's own name (HTTP: every Gateway
// listener of the port); routes "<namespace>/<route>/rule/<i>/match/<j>".
func Attribute(refused, running *listenerv3.Listener, errText string) (v1alpha1.GatewayRejection, error) {
	name, ok := strings.CutPrefix(refused.GetName(), translate.ListenerPrefix)
	parts := strings.Split(name, "/")
	if !ok || len(parts) != 3 {
		return v1alpha1.GatewayRejection{}, fmt.Errorf("listener %q is not a gateway listener", refused.GetName())
	}
	port, err := strconv.ParseInt(parts[2], 10, 32)
	if err != nil {
		return v1alpha1.GatewayRejection{}, fmt.Errorf("listener %q: port: %w", refused.GetName(), err)
	}
	out := v1alpha1.GatewayRejection{Namespace: parts[0], Name: parts[1], Port: int32(port), Error: errText}
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
		if len(chain) < 3 || chain[2] == parts[2] {
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

// changedRules are the route rules whose routes differ between the filter
// chains old and new, and whether the chains differ in nothing but routes.
func changedRules(old, new *listenerv3.FilterChain) (rules []string, sameElse bool) {
	oldRC, oldRest := routesOf(old)
	newRC, newRest := routesOf(new)
	if oldRC == nil || newRC == nil || !proto.Equal(oldRest, newRest) {
		return nil, false
	}
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
	return rules, true
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

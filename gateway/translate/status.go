package translate

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Status is the status every object of Membrane's GatewayClasses should
// have. Conditions carry no transition time: the writer keeps the one the
// object has while a condition's status stays the same.
type Status struct {
	GatewayClasses []GatewayClassStatus `json:"gatewayClasses,omitempty"`
	Gateways       []GatewayStatus      `json:"gateways,omitempty"`
	HTTPRoutes     []RouteStatus        `json:"httpRoutes,omitempty"`
	GRPCRoutes     []RouteStatus        `json:"grpcRoutes,omitempty"`
	TLSRoutes      []RouteStatus        `json:"tlsRoutes,omitempty"`
	TCPRoutes      []RouteStatus        `json:"tcpRoutes,omitempty"`
	UDPRoutes      []RouteStatus        `json:"udpRoutes,omitempty"`
	Ingresses      []IngressStatus      `json:"ingresses,omitempty"`
	// BackendTLSPolicies that apply to backends of Membrane's Gateways.
	BackendTLSPolicies []PolicyStatus `json:"backendTLSPolicies,omitempty"`
}

// GatewayClassStatus is one GatewayClass's status.
type GatewayClassStatus struct {
	Name   string                  `json:"name"`
	Status gwv1.GatewayClassStatus `json:"status"`
}

// GatewayStatus is one Gateway's status.
type GatewayStatus struct {
	Namespace string             `json:"namespace"`
	Name      string             `json:"name"`
	Status    gwv1.GatewayStatus `json:"status"`
}

// RouteStatus is one route's parent statuses written by Membrane (one per
// parentRef to a Gateway of Membrane's); the writer keeps other
// controllers' entries.
type RouteStatus struct {
	Namespace string                   `json:"namespace"`
	Name      string                   `json:"name"`
	Parents   []gwv1.RouteParentStatus `json:"parents"`
}

// SupportedFeatures are the Gateway API features Membrane implements, for
// GatewayClass.status.supportedFeatures (sorted, as the API wants); the
// experimental route kinds only where the cluster serves them.
func SupportedFeatures(served ExperimentalKinds) []gwv1.SupportedFeature {
	names := []gwv1.FeatureName{
		"BackendTLSPolicy", "BackendTLSPolicySANValidation",
		"GRPCRoute", "GRPCRouteNamedRouteRule", "Gateway", "GatewayAddressEmpty", "GatewayHTTPListenerIsolation", "GatewayPort8080",
		"GatewayStaticAddresses",
		"HTTPRoute", "HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket",
		"HTTPRouteBackendRequestHeaderModification", "HTTPRouteBackendTimeout", "HTTPRouteCORS", "HTTPRouteDestinationPortMatching",
		"HTTPRouteHostRewrite",
		"HTTPRouteMethodMatching", "HTTPRouteNamedRouteRule", "HTTPRouteParentRefPort",
		"HTTPRoutePathRedirect", "HTTPRoutePathRewrite", "HTTPRoutePortRedirect", "HTTPRouteQueryParamMatching",
		"HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors", "HTTPRouteRequestPercentageMirror",
		"HTTPRouteRequestTimeout", "HTTPRouteResponseHeaderModification", "HTTPRouteSchemeRedirect",
		"ReferenceGrant",
	}
	for _, k := range []struct {
		name   gwv1.FeatureName
		served bool
	}{{"TCPRoute", served.TCPRoute}, {"TLSRoute", served.TLSRoute}, {"UDPRoute", served.UDPRoute}} {
		if k.served {
			names = append(names, k.name)
		}
	}
	out := make([]gwv1.SupportedFeature, len(names))
	for i, n := range names {
		out[i].Name = n
	}
	return out
}

func condition[T ~string, R ~string](t T, ok bool, reason R, msg string, gen int64) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(t), Status: st, Reason: string(reason), Message: msg, ObservedGeneration: gen}
}

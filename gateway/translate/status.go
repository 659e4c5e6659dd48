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
// GatewayClass.status.supportedFeatures (sorted, as the API wants); TLSRoute
// only where the cluster serves TLSRoutes.
func SupportedFeatures(tlsRoutes bool) []gwv1.SupportedFeature {
	names := []gwv1.FeatureName{
		"BackendTLSPolicy", "BackendTLSPolicySANValidation",
		"GRPCRoute", "Gateway", "GatewayAddressEmpty", "GatewayHTTPListenerIsolation", "GatewayPort8080",
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
	if tlsRoutes {
		names = append(names, "TLSRoute")
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

package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AnnotationProxyRejected is set by a node agent on its own Node while the
// node's Envoy rejects (NACKs) the L7 configuration the agent serves it; the
// value is a ProxyRejection as JSON. The agent removes it once Envoy accepts
// the newest configuration.
const AnnotationProxyRejected = "proxy.membrane.io/rejected"

// ProxyRejection is the value of the AnnotationProxyRejected annotation.
type ProxyRejection struct {
	// Version is the xDS version Envoy rejected.
	Version string `json:"version"`
	// Error is Envoy's error text.
	Error string `json:"error"`
	// Policies name the policies the rejected configuration was made from,
	// as PolicyRef formats them.
	Policies []string `json:"policies"`
	// At is when Envoy rejected the configuration.
	At metav1.Time `json:"at"`
	// Gateways are the gateway listeners Envoy rejected, one entry per
	// node Envoy listener (a Gateway's or Ingress's address and port).
	Gateways []GatewayRejection `json:"gateways,omitempty"`
}

// GatewayRejection is one gateway listener of the node Envoy that Envoy
// rejected: Envoy keeps serving the version of it it accepted last (none
// if it never accepted one).
type GatewayRejection struct {
	// Namespace and Name are the Gateway's; an Ingress's are those of its
	// synthetic Gateway (gateway/translate: "ingress:<name>", or
	// "ingress:shared" without namespace for the shared address).
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Port is the listeners' port.
	Port int32 `json:"port"`
	// Listeners are the Gateway listeners (section names) whose part of
	// the Envoy listener changed since the version Envoy runs: the ones
	// the rejection is about; empty: every listener of the port.
	Listeners []string `json:"listeners,omitempty"`
	// Rules are the route rules whose Envoy routes changed in those
	// listeners: "<namespace>/<route>/rule/<index>" (GRPCRoutes' prefixed
	// "grpcroute:"); empty when the listeners changed elsewhere (their
	// certificates).
	Rules []string `json:"rules,omitempty"`
	// Error is Envoy's error text about the listener.
	Error string `json:"error"`
}

// PolicyRef names a policy in ProxyRejection.Policies: "<kind>
// <namespace>/<name>", or "<kind> <name>" for a cluster-scoped policy (empty
// namespace). It is the String of mesh/policy.Policy.
func PolicyRef(kind, namespace, name string) string {
	s := name
	if namespace != "" {
		s = namespace + "/" + s
	}
	if kind != "" {
		s = kind + " " + s
	}
	return s
}

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

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Condition types set on policies.
const (
	// ConditionValid is True when every rule of the policy passed validation;
	// False (reason ReasonInvalid) with a message naming the field at fault.
	ConditionValid = "Valid"
	// ConditionProgrammed is about the nodes enforcing the policy. The
	// operator sets it for what the node proxies report (see
	// AnnotationProxyRejected): False (reason ReasonProxyRejected) while a
	// node's Envoy rejects the L7 configuration made from the policy, else
	// True (reason ReasonProgrammed) for a policy with HTTP rules. It is
	// False (reason ReasonUnsupported) for a policy using fields Membrane
	// does not implement yet, with a message naming each field and what
	// happens to the traffic instead.
	ConditionProgrammed = "Programmed"
)

// Condition reasons set on policies.
const (
	ReasonValid      = "Valid"
	ReasonInvalid    = "Invalid"
	ReasonProgrammed = "Programmed"
	ReasonPending    = "Pending"
	// ReasonProxyRejected is the reason of Programmed=False when a node's
	// Envoy rejected the L7 configuration made from the policy (see
	// AnnotationProxyRejected).
	ReasonProxyRejected = "ProxyRejected"
	// ReasonUnsupported is the reason of Programmed=False when the policy
	// uses fields the CRD accepts but Membrane does not implement yet
	// (authentication.mode required, toFQDNs, DNS rules, header mismatch
	// actions).
	ReasonUnsupported = "Unsupported"
)

// MembraneNetworkPolicy is a namespaced network policy. Its spec and specs
// are CiliumNetworkPolicy's: a Cilium manifest works after changing
// apiVersion to membrane.io/v1alpha1 and kind to MembraneNetworkPolicy.
// Endpoint selectors (endpointSelector, fromEndpoints, toEndpoints) without
// a namespace label select endpoints in the policy's namespace only.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=mnp,categories=membrane
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Description",type=string,JSONPath=`.spec.description`
// +kubebuilder:validation:XValidation:rule="has(self.spec) || has(self.specs)",message="one of spec or specs must be set"
type MembraneNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy rule.
	// +optional
	Spec *Rule `json:"spec,omitempty"`

	// Specs are further policy rules, for policies made of several.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Specs []Rule `json:"specs,omitempty"`

	// Status is what the controllers observed.
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// MembraneNetworkPolicyList is a list of MembraneNetworkPolicy.
//
// +kubebuilder:object:root=true
type MembraneNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MembraneNetworkPolicy `json:"items"`
}

// MembraneClusterwideNetworkPolicy is the cluster-scoped policy, like
// CiliumClusterwideNetworkPolicy: its endpoint selectors select endpoints of
// every namespace unless they name one (label io.kubernetes.pod.namespace).
// Cilium's nodeSelector (host policies) is not supported.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mcnp,categories=membrane
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Description",type=string,JSONPath=`.spec.description`
// +kubebuilder:validation:XValidation:rule="has(self.spec) || has(self.specs)",message="one of spec or specs must be set"
type MembraneClusterwideNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy rule.
	// +optional
	Spec *Rule `json:"spec,omitempty"`

	// Specs are further policy rules, for policies made of several.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Specs []Rule `json:"specs,omitempty"`

	// Status is what the controllers observed.
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// MembraneClusterwideNetworkPolicyList is a list of
// MembraneClusterwideNetworkPolicy.
//
// +kubebuilder:object:root=true
type MembraneClusterwideNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MembraneClusterwideNetworkPolicy `json:"items"`
}

// PolicyStatus is the observed state of a policy.
type PolicyStatus struct {
	// ObservedGeneration is the metadata.generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions are the latest observations: Valid and Programmed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Validate checks the policy's rules beyond the schema (see Rule.Validate),
// with paths spec.… and specs[i].….
func (p *MembraneNetworkPolicy) Validate() field.ErrorList {
	return validateRules(p.Spec, p.Specs)
}

// Validate checks the policy's rules beyond the schema (see Rule.Validate),
// with paths spec.… and specs[i].….
func (p *MembraneClusterwideNetworkPolicy) Validate() field.ErrorList {
	return validateRules(p.Spec, p.Specs)
}

// Rules returns the policy's rules: spec, then specs.
func (p *MembraneNetworkPolicy) Rules() []Rule { return rules(p.Spec, p.Specs) }

// Rules returns the policy's rules: spec, then specs.
func (p *MembraneClusterwideNetworkPolicy) Rules() []Rule { return rules(p.Spec, p.Specs) }

func rules(spec *Rule, specs []Rule) []Rule {
	out := make([]Rule, 0, len(specs)+1)
	if spec != nil {
		out = append(out, *spec)
	}
	return append(out, specs...)
}

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of a MembraneLoadBalancerIPPool.
const (
	// PoolConditionConflict is True while the pool shares addresses with
	// another pool; the message names it. The older pool (by creation,
	// then name) keeps the shared addresses; the newer one hands out none
	// of its addresses until the overlap is resolved.
	PoolConditionConflict = "io.membrane/PoolConflict"
	// PoolConditionExhausted is True while a Service matching the pool
	// got no address because every address is in use.
	PoolConditionExhausted = "io.membrane/PoolExhausted"
	// PoolConditionValid is False when a block cannot be read.
	PoolConditionValid = "io.membrane/Valid"
)

// MembraneLoadBalancerIPPool is a set of addresses the operator hands to
// Services of type LoadBalancer (and to Gateways): every such Service gets
// one address of a pool whose serviceSelector matches it, written to
// status.loadBalancer.ingress, and a node elected by a Lease announces it
// on the underlay (L2, gratuitous ARP).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=lbippool,categories=membrane
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=`.spec.disabled`
// +kubebuilder:printcolumn:name="Conflicting",type=string,JSONPath=`.status.conditions[?(@.type=="io.membrane/PoolConflict")].status`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Used",type=integer,JSONPath=`.status.used`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MembraneLoadBalancerIPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LoadBalancerIPPoolSpec   `json:"spec"`
	Status LoadBalancerIPPoolStatus `json:"status,omitempty"`
}

// LoadBalancerIPPoolSpec is what a pool offers and to whom.
type LoadBalancerIPPoolSpec struct {
	// Blocks are the pool's addresses: each a CIDR (its network and
	// broadcast addresses are not handed out when it has more than two
	// addresses) or a first-last range. IPv4 only.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Blocks []LoadBalancerIPBlock `json:"blocks"`
	// ServiceSelector limits the pool to the Services whose labels match
	// (Gateways match by the labels of the Gateway). Empty or absent: every
	// Service.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
	// Disabled stops new assignments from the pool; addresses already
	// assigned stay.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// LoadBalancerIPBlock is a CIDR or a range: exactly one of the two.
//
// +kubebuilder:validation:XValidation:rule="has(self.cidr) != (has(self.start) || has(self.stop))",message="a block is either cidr or start and stop"
// +kubebuilder:validation:XValidation:rule="has(self.cidr) || (has(self.start) && has(self.stop))",message="a range needs both start and stop"
type LoadBalancerIPBlock struct {
	// CIDR is an IPv4 prefix, e.g. 198.18.1.192/27.
	// +optional
	// +kubebuilder:validation:MaxLength=18
	CIDR string `json:"cidr,omitempty"`
	// Start is the first address of a range.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	Start string `json:"start,omitempty"`
	// Stop is the last address of a range (inclusive).
	// +optional
	// +kubebuilder:validation:MaxLength=15
	Stop string `json:"stop,omitempty"`
}

// LoadBalancerIPPoolStatus is what the operator sees of a pool.
type LoadBalancerIPPoolStatus struct {
	// Conditions: io.membrane/PoolConflict, io.membrane/PoolExhausted,
	// io.membrane/Valid.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Total is the number of addresses of the pool.
	// +optional
	Total int64 `json:"total,omitempty"`
	// Used is the number of them assigned.
	// +optional
	Used int64 `json:"used,omitempty"`
	// Available is Total minus Used (zero while the pool conflicts or is
	// disabled).
	// +optional
	Available int64 `json:"available,omitempty"`
}

// MembraneLoadBalancerIPPoolList is a list of MembraneLoadBalancerIPPool.
//
// +kubebuilder:object:root=true
type MembraneLoadBalancerIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MembraneLoadBalancerIPPool `json:"items"`
}

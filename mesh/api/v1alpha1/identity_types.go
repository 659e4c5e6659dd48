package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Keys of security labels are "source:key", as Cilium's are: the label key
// prefixed by where the label comes from.
const (
	// LabelSourceK8s marks labels taken from Kubernetes (pod labels, the
	// namespace, the service account, namespace labels).
	LabelSourceK8s = "k8s"
	// PodNamespaceLabel is the key of the endpoint's namespace (with source:
	// "k8s:io.kubernetes.pod.namespace").
	PodNamespaceLabel = "io.kubernetes.pod.namespace"
)

// MembraneIdentity is a security identity, like CiliumIdentity: every endpoint
// whose security labels are equal shares it, and the datapath knows peers by
// its number, which is the object's name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=mid,categories=membrane
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.securityLabels.k8s:io\.kubernetes\.pod\.namespace`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[1-9][0-9]{0,9}$') && int(self.metadata.name) <= 4294967295",message="metadata.name must be the numeric identity, 1 to 4294967295"
type MembraneIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// SecurityLabels are the labels that make up the identity, keyed
	// "source:key" (e.g. "k8s:app", "k8s:io.kubernetes.pod.namespace").
	// They never change: other labels make another identity.
	// +kubebuilder:validation:MaxProperties=128
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="securityLabels is immutable"
	SecurityLabels map[string]string `json:"securityLabels"`
}

// MembraneIdentityList is a list of MembraneIdentity.
//
// +kubebuilder:object:root=true
type MembraneIdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MembraneIdentity `json:"items"`
}

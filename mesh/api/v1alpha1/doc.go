// Package v1alpha1 is the membrane.io/v1alpha1 API: network policies whose
// spec uses CiliumNetworkPolicy's field names (so a Cilium manifest works after
// changing apiVersion and kind) and the identities the operator allocates.
//
// The CRD manifests in charts/membrane/crds and zz_generated.deepcopy.go are
// generated from the markers in this package; `make generate` rewrites them.
// What an OpenAPI schema cannot check is checked by [Rule.Validate].
//
// +kubebuilder:object:generate=true
// +groupName=membrane.io
package v1alpha1

//go:generate go tool controller-gen object paths=.
//go:generate go tool controller-gen crd paths=. output:crd:artifacts:config=../../../charts/membrane/crds

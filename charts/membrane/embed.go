// Package membrane carries files of the Membrane Helm chart that Go code
// needs too: the CustomResourceDefinitions and the manifests of the
// templates directory (plain YAML so far), which the local cluster applies
// from here.
package membrane

import "embed"

// CRDs holds crds/*.yaml, the CustomResourceDefinitions of membrane.io.
//
//go:embed crds/*.yaml
var CRDs embed.FS

// Templates holds templates/*.yaml: the node Envoy (envoy.yaml: its
// bootstrap ConfigMap and DaemonSet) and the components' cluster roles
// (rbac.yaml).
//
//go:embed templates/*.yaml
var Templates embed.FS

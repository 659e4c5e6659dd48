// Package membrane carries files of the Membrane Helm chart that Go code
// needs too: the CustomResourceDefinitions.
package membrane

import "embed"

// CRDs holds crds/*.yaml, the CustomResourceDefinitions of membrane.io.
//
//go:embed crds/*.yaml
var CRDs embed.FS

package clustermesh

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/membrane-mesh/membrane/mesh/model"
)

// Annotation keys: Membrane's own and Cilium's, which are accepted as
// aliases (Membrane's wins when both are set).
const (
	AnnotationGlobal   = "service.membrane.io/global"
	AnnotationShared   = "service.membrane.io/shared"
	AnnotationAffinity = "service.membrane.io/affinity"

	CiliumAnnotationGlobal   = "service.cilium.io/global"
	CiliumAnnotationShared   = "service.cilium.io/shared"
	CiliumAnnotationAffinity = "service.cilium.io/affinity"
)

// Annotations reads a Service's global-service annotations. A value that
// cannot be read is reported (naming the annotation) and counts as if it
// were absent: global false, shared true, affinity none.
func Annotations(ann map[string]string) (model.Global, error) {
	var errs []error
	pick := func(own, alias string) (key, value string, ok bool) {
		if v, ok := ann[own]; ok {
			return own, v, true
		}
		if v, ok := ann[alias]; ok {
			return alias, v, true
		}
		return "", "", false
	}
	boolean := func(own, alias string, def bool) bool {
		k, v, ok := pick(own, alias)
		if !ok {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %q is not true or false", k, v))
			return def
		}
		return b
	}
	g := model.Global{
		Global: boolean(AnnotationGlobal, CiliumAnnotationGlobal, false),
		Shared: boolean(AnnotationShared, CiliumAnnotationShared, true),
	}
	if k, v, ok := pick(AnnotationAffinity, CiliumAnnotationAffinity); ok {
		switch a := model.Affinity(v); a {
		case model.AffinityNone, model.AffinityLocal, model.AffinityRemote:
			g.Affinity = a
		default:
			errs = append(errs, fmt.Errorf("annotation %s: %q is not local, remote or none", k, v))
		}
	}
	if g.Affinity == "" {
		g.Affinity = model.AffinityNone
	}
	return g, errors.Join(errs...)
}

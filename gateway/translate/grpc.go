package translate

import (
	"regexp"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
)

// tlsAsHTTP expresses a TLSRoute as an HTTPRoute of one match-all rule per
// rule: what it has are hostnames (SNI) and weighted backends.
func tlsAsHTTP(t *gwv1alpha2.TLSRoute) *gwv1.HTTPRoute {
	r := l4AsHTTP(t.ObjectMeta, t.Spec.CommonRouteSpec, len(t.Spec.Rules), func(i int) []gwv1.BackendRef { return t.Spec.Rules[i].BackendRefs })
	r.Spec.Hostnames = t.Spec.Hostnames
	return r
}

// tcpAsHTTP and udpAsHTTP express a TCPRoute and a UDPRoute as an
// HTTPRoute of one match-all rule per rule, without hostnames: what they
// have are weighted backends.
func tcpAsHTTP(t *gwv1alpha2.TCPRoute) *gwv1.HTTPRoute {
	return l4AsHTTP(t.ObjectMeta, t.Spec.CommonRouteSpec, len(t.Spec.Rules), func(i int) []gwv1.BackendRef { return t.Spec.Rules[i].BackendRefs })
}

func udpAsHTTP(u *gwv1alpha2.UDPRoute) *gwv1.HTTPRoute {
	return l4AsHTTP(u.ObjectMeta, u.Spec.CommonRouteSpec, len(u.Spec.Rules), func(i int) []gwv1.BackendRef { return u.Spec.Rules[i].BackendRefs })
}

func l4AsHTTP(meta metav1.ObjectMeta, common gwv1.CommonRouteSpec, rules int, backends func(int) []gwv1.BackendRef) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: meta}
	r.Spec.CommonRouteSpec = common
	for i := range rules {
		var hr gwv1.HTTPRouteRule
		for _, b := range backends(i) {
			hr.BackendRefs = append(hr.BackendRefs, gwv1.HTTPBackendRef{BackendRef: b})
		}
		r.Spec.Rules = append(r.Spec.Rules, hr)
	}
	return r
}

// grpcAsHTTP expresses a GRPCRoute as the HTTPRoute it amounts to: gRPC is
// HTTP/2 with the method in the path ("/<service>/<method>"), so method
// matches become path matches, and the filters and backends carry over.
func grpcAsHTTP(g *gwv1.GRPCRoute) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: g.ObjectMeta}
	r.Spec.ParentRefs = g.Spec.ParentRefs
	r.Spec.Hostnames = g.Spec.Hostnames
	for _, gr := range g.Spec.Rules {
		hr := gwv1.HTTPRouteRule{Name: gr.Name, SessionPersistence: gr.SessionPersistence}
		for _, m := range gr.Matches {
			var hm gwv1.HTTPRouteMatch
			if m.Method != nil {
				hm.Path = methodPath(*m.Method)
			}
			for _, h := range m.Headers {
				t := gwv1.HeaderMatchExact
				if h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression {
					t = gwv1.HeaderMatchRegularExpression
				}
				hm.Headers = append(hm.Headers, gwv1.HTTPHeaderMatch{Type: &t, Name: gwv1.HTTPHeaderName(h.Name), Value: h.Value})
			}
			hr.Matches = append(hr.Matches, hm)
		}
		for _, f := range gr.Filters {
			hr.Filters = append(hr.Filters, grpcFilter(f))
		}
		for _, b := range gr.BackendRefs {
			hb := gwv1.HTTPBackendRef{BackendRef: b.BackendRef}
			for _, f := range b.Filters {
				hb.Filters = append(hb.Filters, grpcFilter(f))
			}
			hr.BackendRefs = append(hr.BackendRefs, hb)
		}
		r.Spec.Rules = append(r.Spec.Rules, hr)
	}
	return r
}

func grpcFilter(f gwv1.GRPCRouteFilter) gwv1.HTTPRouteFilter {
	return gwv1.HTTPRouteFilter{
		Type:                   gwv1.HTTPRouteFilterType(f.Type),
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
}

// methodPath is the path match of a gRPC method match.
func methodPath(m gwv1.GRPCMethodMatch) *gwv1.HTTPPathMatch {
	service, method := ptrValue(m.Service), ptrValue(m.Method)
	if m.Type == nil || *m.Type == gwv1.GRPCMethodMatchExact {
		switch {
		case service != "" && method != "":
			return &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchExact), Value: ptr("/" + service + "/" + method)}
		case service != "":
			return &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/" + service)}
		}
		return &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr("/[^/]+/" + regexp.QuoteMeta(method))}
	}
	if service == "" {
		service = "[^/]+"
	}
	if method == "" {
		method = "[^/]+"
	}
	return &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr("/" + service + "/" + method)}
}

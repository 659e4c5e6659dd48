package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// attachHTTPRoute attaches a route to the listeners its parentRefs select
// and returns its parent statuses (ok is false when none of its parents is
// a Gateway of Membrane's).
func (b *builder) attachHTTPRoute(r *gwv1.HTTPRoute, kind string) (RouteStatus, bool) {
	gen := r.Generation
	rs := RouteStatus{Namespace: r.Namespace, Name: r.Name}
	b.used = nil
	rules, resolved, unsupported := b.httpRules(r, kind)
	used := b.used
	for _, ref := range r.Spec.ParentRefs {
		if (ref.Group != nil && *ref.Group != gatewayGroup) || (ref.Kind != nil && *ref.Kind != kindGateway) {
			continue
		}
		ns := r.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		g, ok := b.byName[types.NamespacedName{Namespace: ns, Name: string(ref.Name)}]
		if !ok {
			continue // not ours (or not there): another controller's business
		}
		for _, bt := range used {
			bt.reached = true
			if !g.ingress { // an Ingress's Gateway is no object to name
				bt.ancestors[types.NamespacedName{Namespace: g.gw.Namespace, Name: g.gw.Name}] = true
			}
		}
		accepted := b.attach(r, kind, ref, g, rules)
		if accepted.Status == metav1.ConditionTrue && unsupported != "" {
			accepted = condition(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonUnsupportedValue, unsupported, 0)
		}
		ps := gwv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName,
			Conditions: []metav1.Condition{accepted, resolved}}
		ps.Conditions[0].ObservedGeneration, ps.Conditions[1].ObservedGeneration = gen, gen
		rs.Parents = append(rs.Parents, ps)
	}
	return rs, len(rs.Parents) > 0
}

// attach adds the route's rules to every listener of g that ref selects
// and that accepts the route, and returns the Accepted condition.
func (b *builder) attach(r *gwv1.HTTPRoute, kind string, ref gwv1.ParentReference, g *gateway, rules []rule) metav1.Condition {
	var matched, allowed, attached int
	var taken *listener
	for _, l := range g.listeners {
		if ref.SectionName != nil && *ref.SectionName != l.spec.Name {
			continue
		}
		if ref.Port != nil && *ref.Port != l.spec.Port {
			continue
		}
		matched++
		if !l.attachable || !b.allows(l, g.gw.Namespace, r.Namespace, kind) {
			continue
		}
		allowed++
		hosts := intersectHostnames(l.spec.Hostname, r.Spec.Hostnames)
		if len(hosts) == 0 {
			continue
		}
		if forwardsWhole(l.spec.Protocol) {
			if l.forwardsTo != "" && l.forwardsTo != r.Namespace+"/"+r.Name {
				taken = l
				continue
			}
			l.forwardsTo = r.Namespace + "/" + r.Name
		}
		attached++
		l.attached++
		for _, ru := range rules {
			l.routes = append(l.routes, attachedRoute{hostnames: hosts, route: ru.route, prec: ru.prec})
		}
	}
	switch {
	case matched == 0:
		return condition(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonNoMatchingParent, "No listener of the Gateway matches the parentRef's sectionName and port", 0)
	case allowed == 0:
		return condition(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonNotAllowedByListeners, "The matching listeners do not allow routes from this namespace or of this kind", 0)
	case attached == 0 && taken != nil:
		return condition(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonNotAllowedByListeners,
			fmt.Sprintf("Listener %s forwards to %s %s already: a %s listener forwards to one route, the oldest", taken.spec.Name, kind, taken.forwardsTo, taken.spec.Protocol), 0)
	case attached == 0:
		return condition(gwv1.RouteConditionAccepted, false, gwv1.RouteReasonNoMatchingListenerHostname, "No hostname of the route matches a listener's hostname", 0)
	}
	return condition(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted, "Route accepted", 0)
}

// allows reports whether listener l of a Gateway in gwNS accepts a route
// of kind from routeNS.
func (b *builder) allows(l *listener, gwNS, routeNS, kind string) bool {
	if !slices.ContainsFunc(l.supportedKinds, func(k gwv1.RouteGroupKind) bool { return string(k.Kind) == kind }) {
		return false
	}
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		return s.Matches(b.nsLabels[routeNS])
	case gwv1.NamespacesFromSame:
		return gwNS == routeNS
	}
	return false
}

// rule is one translated rule match of a route.
type rule struct {
	route ir.Route
	prec  precedence
}

// precedence orders routes as Gateway API says: exact path, longest
// prefix, method, most headers, most query parameters, oldest route, route
// name, rule and match order.
type precedence struct {
	exact                 bool
	pathLen               int
	method                bool
	headers, queries      int
	created               metav1.Time
	namespace, name       string
	ruleIndex, matchIndex int
}

func comparePrecedence(a, b precedence) int {
	return cmp.Or(
		-compareBool(a.exact, b.exact),
		-cmp.Compare(a.pathLen, b.pathLen),
		-compareBool(a.method, b.method),
		-cmp.Compare(a.headers, b.headers),
		-cmp.Compare(a.queries, b.queries),
		a.created.Time.Compare(b.created.Time),
		cmp.Compare(a.namespace, b.namespace),
		cmp.Compare(a.name, b.name),
		cmp.Compare(a.ruleIndex, b.ruleIndex),
		cmp.Compare(a.matchIndex, b.matchIndex),
	)
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// httpRules translates a route's rules (once for all its parents) and
// returns the ResolvedRefs condition and what of the route is not
// supported ("" when all is).
func (b *builder) httpRules(r *gwv1.HTTPRoute, kind string) ([]rule, metav1.Condition, string) {
	var unsupportedMsgs []string
	resolved := condition(gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "References resolved", 0)
	var rules []rule
	for i, spec := range r.Spec.Rules {
		action := ir.Route{}
		var unsupported []string
		// closed: a filter whose backend does not resolve must not let the
		// requests through (externalAuth): the rule answers 500.
		closed := false
		for _, f := range spec.Filters {
			switch f.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier:
				action.RequestHeaders = headerModifier(f.RequestHeaderModifier)
			case gwv1.HTTPRouteFilterResponseHeaderModifier:
				action.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
			case gwv1.HTTPRouteFilterRequestRedirect:
				action.Redirect = redirect(f.RequestRedirect)
			case gwv1.HTTPRouteFilterURLRewrite:
				action.Rewrite = rewrite(f.URLRewrite)
			case gwv1.HTTPRouteFilterCORS:
				if f.CORS == nil {
					unsupported = append(unsupported, "CORS without cors")
					continue
				}
				action.CORS = cors(f.CORS)
			case gwv1.HTTPRouteFilterRequestMirror:
				cluster, reason, msg := b.resolve(r.Namespace, kind, f.RequestMirror.BackendRef)
				if reason != "" || cluster == "" {
					if reason == "" {
						continue // an unusable BackendTLSPolicy: nothing mirrored
					}
					if resolved.Status == metav1.ConditionTrue {
						resolved = condition(gwv1.RouteConditionResolvedRefs, false, reason, fmt.Sprintf("rules[%d].filters: mirror: %s", i, msg), 0)
					}
					continue
				}
				action.Mirrors = append(action.Mirrors, ir.Mirror{Cluster: cluster, Percent: mirrorPercent(f.RequestMirror)})
			case gwv1.HTTPRouteFilterExternalAuth:
				ea, why, reason, msg := b.extAuth(r.Namespace, kind, f.ExternalAuth)
				switch {
				case why != "":
					unsupported = append(unsupported, why)
				case ea == nil:
					closed = true
					if reason != "" && resolved.Status == metav1.ConditionTrue {
						resolved = condition(gwv1.RouteConditionResolvedRefs, false, reason, fmt.Sprintf("rules[%d].filters: externalAuth: %s (its requests get 500)", i, msg), 0)
					}
				default:
					action.ExtAuth = ea
				}
			default:
				unsupported = append(unsupported, string(f.Type))
			}
		}
		if t := spec.Timeouts; t != nil {
			var err error
			if action.Timeout, err = duration(t.Request); err != nil {
				unsupported = append(unsupported, "timeouts.request: "+err.Error())
			}
			if action.BackendTimeout, err = duration(t.BackendRequest); err != nil {
				unsupported = append(unsupported, "timeouts.backendRequest: "+err.Error())
			}
		}
		if rt := spec.Retry; rt != nil {
			// Unset attempts: one retry (Envoy's default).
			action.Retry = &ir.Retry{Attempts: 1}
			if rt.Attempts != nil {
				action.Retry.Attempts = max(*rt.Attempts, 0)
			}
			for _, c := range rt.Codes {
				action.Retry.Codes = append(action.Retry.Codes, int(c))
			}
			var err error
			if action.Retry.Backoff, err = duration(rt.Backoff); err != nil {
				unsupported = append(unsupported, "retry.backoff: "+err.Error())
			}
		}
		if sp := spec.SessionPersistence; sp != nil {
			var why []string
			action.Session, why = session(sp)
			unsupported = append(unsupported, why...)
		}
		if action.Redirect == nil {
			for j, ref := range spec.BackendRefs {
				be, reason, msg := b.backend(r.Namespace, kind, ref)
				if reason != "" && resolved.Status == metav1.ConditionTrue {
					resolved = condition(gwv1.RouteConditionResolvedRefs, false, reason, fmt.Sprintf("rules[%d].backendRefs[%d]: %s", i, j, msg), 0)
				}
				for _, f := range ref.Filters {
					if f.Type == gwv1.HTTPRouteFilterRequestHeaderModifier {
						be.RequestHeaders = headerModifier(f.RequestHeaderModifier)
					} else {
						unsupported = append(unsupported, "backendRefs[].filters "+string(f.Type))
					}
				}
				if be.Weight > 0 {
					action.Backends = append(action.Backends, be)
				}
			}
			if !slices.ContainsFunc(action.Backends, func(be ir.Backend) bool { return !be.Invalid }) {
				// No backend (or only invalid ones): every request gets 500.
				action.Backends, action.DirectResponse = nil, 500
			}
		}
		if closed {
			action = ir.Route{DirectResponse: 500}
		}
		if len(unsupported) > 0 {
			// A filter that cannot be applied must not be skipped: the
			// rule answers 500 instead.
			action = ir.Route{DirectResponse: 500}
			unsupportedMsgs = append(unsupportedMsgs, fmt.Sprintf("rules[%d]: not supported: %s (its requests get 500)", i, strings.Join(unsupported, ", ")))
		}
		if action.Session != nil && len(action.Backends) > 1 && b.combinable(action.Backends) {
			// One cluster, so that a session stays on its endpoint
			// whichever backend it is of (else it stays on it only while
			// the weights pick its backend).
			name := fmt.Sprintf("%s/%s/rule/%d/session", r.Namespace, r.Name, i)
			if kind != kindHTTPRoute {
				name = strings.ToLower(kind) + ":" + name
			}
			action.Backends = []ir.Backend{b.combine(name, action.Backends)}
		}
		matches := spec.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for j, m := range matches {
			ru := action
			ru.Name = fmt.Sprintf("%s/%s/rule/%d/match/%d", r.Namespace, r.Name, i, j)
			if kind != kindHTTPRoute {
				ru.Name = strings.ToLower(kind) + ":" + ru.Name
			}
			ru.Match, ru.RequestHeaders, ru.ResponseHeaders = match(m), action.RequestHeaders, action.ResponseHeaders
			if ru.Session != nil && !ru.Session.Header {
				// The cookie goes back with the requests this match serves.
				s := *ru.Session
				s.Path = "/"
				if ru.Match.PathType != ir.PathRegex {
					s.Path = ru.Match.Path
				}
				ru.Session = &s
			}
			p := precedence{exact: ru.Match.PathType == ir.PathExact, pathLen: len(ru.Match.Path), method: ru.Match.Method != "",
				headers: len(ru.Match.Headers), queries: len(ru.Match.QueryParams), created: r.CreationTimestamp,
				namespace: r.Namespace, name: r.Name, ruleIndex: i, matchIndex: j}
			rules = append(rules, rule{route: ru, prec: p})
		}
	}
	if (kind == kindTCPRoute || kind == kindUDPRoute) && len(r.Spec.Rules) > 1 {
		unsupportedMsgs = append(unsupportedMsgs, fmt.Sprintf("rules[1:]: a %s listener forwards to one rule's backends, so only rules[0] is served (%s rules have no matches to choose by)", strings.TrimSuffix(kind, "Route"), kind))
	}
	return rules, resolved, strings.Join(unsupportedMsgs, "; ")
}

// extAuth translates an ExternalAuth filter of a route in routeNS. why
// names what is not supported; without it, a nil ExtAuth is a server that
// does not resolve (reason and msg say why; "" when its BackendTLSPolicy
// is not usable).
func (b *builder) extAuth(routeNS, kind string, f *gwv1.HTTPExternalAuthFilter) (*ir.ExtAuth, string, gwv1.RouteConditionReason, string) {
	if f == nil {
		return nil, "ExternalAuth without externalAuth", "", ""
	}
	grpcAuth := f.ExternalAuthProtocol == gwv1.HTTPRouteExternalAuthGRPCProtocol
	if !grpcAuth && f.ExternalAuthProtocol != gwv1.HTTPRouteExternalAuthHTTPProtocol {
		return nil, fmt.Sprintf("externalAuth.protocol %s (HTTP and GRPC are supported)", f.ExternalAuthProtocol), "", ""
	}
	cluster, reason, msg := b.resolveAs(routeNS, kind, grpcAuth, f.BackendRef)
	if reason != "" || cluster == "" {
		return nil, "", reason, msg
	}
	ns := routeNS
	if f.BackendRef.Namespace != nil {
		ns = string(*f.BackendRef.Namespace)
	}
	ea := &ir.ExtAuth{Cluster: cluster, Authority: fmt.Sprintf("%s.%s:%d", f.BackendRef.Name, ns, *f.BackendRef.Port), GRPC: grpcAuth}
	switch {
	case grpcAuth && f.GRPCAuthConfig != nil:
		ea.RequestHeaders = f.GRPCAuthConfig.AllowedRequestHeaders
	case !grpcAuth && f.HTTPAuthConfig != nil:
		h := f.HTTPAuthConfig
		ea.PathPrefix, ea.RequestHeaders, ea.ResponseHeaders = h.Path, h.AllowedRequestHeaders, h.AllowedResponseHeaders
	}
	if fb := f.ForwardBody; fb != nil {
		ea.MaxBody = uint32(fb.MaxSize)
	}
	return ea, "", "", ""
}

// defaultSessionName names a session's cookie or header when
// sessionPersistence.sessionName does not.
const defaultSessionName = "membrane-session"

// session translates a rule's sessionPersistence; why names the fields
// that cannot be honoured. A cookie's path is the match's.
func session(sp *gwv1.SessionPersistence) (*ir.Session, []string) {
	s := &ir.Session{Name: cmp.Or(ptrValue(sp.SessionName), defaultSessionName)}
	var why []string
	if sp.IdleTimeout != nil {
		why = append(why, "sessionPersistence.idleTimeout (Envoy ends no session for idleness)")
	}
	ttl, err := duration(sp.AbsoluteTimeout)
	if err != nil {
		why = append(why, "sessionPersistence.absoluteTimeout: "+err.Error())
	}
	permanent := sp.CookieConfig != nil && ptrValue(sp.CookieConfig.LifetimeType) == gwv1.PermanentCookieLifetimeType
	switch {
	case ptrValue(sp.Type) == gwv1.HeaderBasedSessionPersistence:
		s.Header = true
		if ttl > 0 {
			why = append(why, "sessionPersistence.absoluteTimeout with type Header (a header carries no lifetime)")
		}
	case permanent:
		s.TTL = ttl
	case ttl > 0:
		why = append(why, "sessionPersistence.absoluteTimeout with a Session cookie (only a Permanent cookie's Max-Age ends the session)")
	}
	return s, why
}

func match(m gwv1.HTTPRouteMatch) ir.Match {
	out := ir.Match{PathType: ir.PathPrefix, Path: "/"}
	if m.Path != nil {
		if m.Path.Type != nil && *m.Path.Type == gwv1.PathMatchExact {
			out.PathType = ir.PathExact
		}
		if m.Path.Type != nil && *m.Path.Type == gwv1.PathMatchRegularExpression {
			out.PathType = ir.PathRegex
		}
		if m.Path.Value != nil {
			out.Path = *m.Path.Value
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, ir.ValueMatch{Name: strings.ToLower(string(h.Name)), Value: h.Value,
			Regex: h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression})
	}
	for _, q := range m.QueryParams {
		out.QueryParams = append(out.QueryParams, ir.ValueMatch{Name: string(q.Name), Value: q.Value,
			Regex: q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression})
	}
	return out
}

func headerModifier(f *gwv1.HTTPHeaderFilter) ir.HeaderModifier {
	var m ir.HeaderModifier
	if f == nil {
		return m
	}
	for _, h := range f.Set {
		m.Set = append(m.Set, ir.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, ir.Header{Name: string(h.Name), Value: h.Value})
	}
	m.Remove = append(m.Remove, f.Remove...)
	return m
}

func rewrite(f *gwv1.HTTPURLRewriteFilter) *ir.Rewrite {
	rw := &ir.Rewrite{}
	if f.Hostname != nil {
		rw.Hostname = string(*f.Hostname)
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			rw.FullPath = p.ReplaceFullPath
		case gwv1.PrefixMatchHTTPPathModifier:
			rw.PrefixPath = p.ReplacePrefixMatch
		}
	}
	return rw
}

func cors(f *gwv1.HTTPCORSFilter) *ir.CORS {
	c := &ir.CORS{AllowCredentials: ptrValue(f.AllowCredentials), MaxAge: 5 * time.Second}
	if f.MaxAge > 0 {
		c.MaxAge = time.Duration(f.MaxAge) * time.Second
	}
	for _, o := range f.AllowOrigins {
		c.AllowOrigins = append(c.AllowOrigins, string(o))
	}
	for _, m := range f.AllowMethods {
		c.AllowMethods = append(c.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		c.AllowHeaders = append(c.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		c.ExposeHeaders = append(c.ExposeHeaders, string(h))
	}
	return c
}

func mirrorPercent(f *gwv1.HTTPRequestMirrorFilter) float64 {
	switch {
	case f.Percent != nil:
		return float64(*f.Percent)
	case f.Fraction != nil:
		d := int32(100)
		if f.Fraction.Denominator != nil && *f.Fraction.Denominator > 0 {
			d = *f.Fraction.Denominator
		}
		return 100 * float64(f.Fraction.Numerator) / float64(d)
	}
	return 100
}

// duration parses a Gateway API Duration ("1h2m3s4ms" style); nil is 0.
func duration(d *gwv1.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid duration %q", *d)
	}
	return v, nil
}

func redirect(f *gwv1.HTTPRequestRedirectFilter) *ir.Redirect {
	rd := &ir.Redirect{StatusCode: 302}
	if f.StatusCode != nil {
		rd.StatusCode = *f.StatusCode
	}
	if f.Scheme != nil {
		rd.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		rd.Hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		rd.Port = uint16(*f.Port)
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			rd.FullPath = p.ReplaceFullPath
		case gwv1.PrefixMatchHTTPPathModifier:
			rd.PrefixPath = p.ReplacePrefixMatch
		}
	}
	return rd
}

// backend resolves a backendRef; reason and msg say why it does not
// resolve (the backend is then Invalid).
func (b *builder) backend(routeNS, kind string, ref gwv1.HTTPBackendRef) (ir.Backend, gwv1.RouteConditionReason, string) {
	be := ir.Backend{Weight: 1, Invalid: true}
	if ref.Weight != nil {
		be.Weight = uint32(max(*ref.Weight, 0))
	}
	cluster, reason, msg := b.resolve(routeNS, kind, ref.BackendObjectReference)
	if reason != "" || cluster == "" {
		return be, reason, msg
	}
	be.Cluster, be.Invalid = cluster, false
	return be, "", ""
}

// resolve turns a reference of a route of kind to a Service port into an
// IR cluster's name (GRPCRoute backends speak h2c; HTTP and gRPC routes'
// backends speak TLS as a BackendTLSPolicy says); reason and msg say why
// it does not resolve. The name is "" without a reason when the Service
// port's BackendTLSPolicy is not usable (its status says why): the
// backend answers 500.
func (b *builder) resolve(routeNS, routeKind string, ref gwv1.BackendObjectReference) (string, gwv1.RouteConditionReason, string) {
	return b.resolveAs(routeNS, routeKind, routeKind == kindGRPCRoute, ref)
}

// resolveAs is resolve, with h2c: the cluster speaks HTTP/2 (gRPC) to the
// Service port whatever its appProtocol.
func (b *builder) resolveAs(routeNS, routeKind string, h2c bool, ref gwv1.BackendObjectReference) (string, gwv1.RouteConditionReason, string) {
	group, kind := "", kindService
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	name := string(ref.Name)
	if group != "" || kind != kindService {
		return "", gwv1.RouteReasonInvalidKind, fmt.Sprintf("kind %s of group %q is not supported (Services are)", kind, group)
	}
	if ns != routeNS && !b.granted(gatewayGroup, routeKind, routeNS, "", kindService, ns, name) {
		return "", gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("Service %s/%s: no ReferenceGrant in %s allows it", ns, name, ns)
	}
	svc, ok := b.services[types.NamespacedName{Namespace: ns, Name: name}]
	if !ok {
		return "", gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s/%s not found", ns, name)
	}
	if ref.Port == nil {
		return "", gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("Service %s/%s: port is required", ns, name)
	}
	proto := corev1.ProtocolTCP
	if routeKind == kindUDPRoute {
		proto = corev1.ProtocolUDP
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == int32(*ref.Port) && cmp.Or(svc.Spec.Ports[i].Protocol, corev1.ProtocolTCP) == proto {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return "", gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s/%s has no %s port %d", ns, name, proto, *ref.Port)
	}
	c := ir.Cluster{Name: fmt.Sprintf("%s/%s/%d", ns, name, sp.Port), Endpoints: b.endpoints(svc, sp)}
	switch {
	case proto == corev1.ProtocolUDP:
		c.Name += "/udp"
	case ptrValue(sp.AppProtocol) == "kubernetes.io/h2c":
		c.Protocol = "h2c"
	case h2c:
		c.Name, c.Protocol = c.Name+"/h2c", "h2c"
	}
	if routeKind == kindHTTPRoute || routeKind == kindGRPCRoute {
		svcNN := types.NamespacedName{Namespace: ns, Name: name}
		b.used = append(b.used, b.targeting(svcNN, sp.Name)...)
		if bt := b.backendTLSFor(svcNN, sp.Name); bt != nil {
			if bt.tls == nil {
				return "", "", ""
			}
			c.Name, c.TLS = c.Name+"/tls", bt.tls
		}
	}
	b.clusters[c.Name] = c
	return c.Name, "", ""
}

// endpoints are a Service port's ready IPv4 endpoints, from its
// EndpointSlices (the ports of the same name and protocol).
func (b *builder) endpoints(svc *corev1.Service, sp *corev1.ServicePort) []netip.AddrPort {
	seen := map[netip.AddrPort]bool{}
	var out []netip.AddrPort
	for _, es := range b.in.EndpointSlices {
		if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32
		for _, p := range es.Ports {
			if ptrValue(p.Name) == sp.Name && p.Port != nil && cmp.Or(ptrValue(p.Protocol), corev1.ProtocolTCP) == cmp.Or(sp.Protocol, corev1.ProtocolTCP) {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Is4() {
					continue
				}
				ap := netip.AddrPortFrom(ip, uint16(port))
				if !seen[ap] {
					seen[ap] = true
					out = append(out, ap)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, c netip.AddrPort) int { return a.Compare(c) })
	return out
}

// intersectHostnames is the hostnames a route serves on a listener: the
// more specific of each matching pair; none when they do not meet. "*"
// stands for any.
func intersectHostnames(listener *gwv1.Hostname, route []gwv1.Hostname) []string {
	lh := string(ptrValue(listener))
	if len(route) == 0 {
		if lh == "" {
			return []string{"*"}
		}
		return []string{lh}
	}
	var out []string
	for _, h := range route {
		rh := string(h)
		switch {
		case lh == "" || hostMatches(lh, rh):
			out = append(out, rh)
		case hostMatches(rh, lh):
			out = append(out, lh)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hostMatches reports whether pattern (a name or "*.suffix") covers host
// (a name or a narrower wildcard).
func hostMatches(pattern, host string) bool {
	if pattern == host {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok {
		return false
	}
	h := strings.TrimPrefix(host, "*")
	return strings.HasSuffix(h, suffix) && len(h) > len(suffix)
}

// ir assembles the IR: one listener per (Gateway address, port) of the
// valid listeners of Gateways with an address.
func (b *builder) ir() ir.IR {
	var out ir.IR
	for _, g := range b.gateways {
		if !g.address.IsValid() {
			continue
		}
		// A UDP listener may share its port with a TCP-based one.
		type portKey struct {
			port gwv1.PortNumber
			udp  bool
		}
		byPort := map[portKey]*ir.Listener{}
		gwListeners := map[portKey][]*listener{}
		for _, l := range g.listeners {
			if !l.valid {
				continue
			}
			key := portKey{l.spec.Port, l.spec.Protocol == gwv1.UDPProtocolType}
			il, ok := byPort[key]
			if !ok {
				il = &ir.Listener{Name: fmt.Sprintf("%s/%s/%d", g.gw.Namespace, g.gw.Name, l.spec.Port),
					Address: g.address, Port: uint16(l.spec.Port), Protocol: ir.Protocol(l.spec.Protocol)}
				if key.udp {
					il.Name += "/udp"
				}
				byPort[key] = il
			}
			switch il.Protocol {
			case ir.HTTP:
				gwListeners[key] = append(gwListeners[key], l)
				continue
			case ir.TLS:
				il.Servers = append(il.Servers, tlsServers(g, l)...)
				continue
			case ir.TCP, ir.UDP:
				il.Servers = b.forwardServer(g, l)
				continue
			}
			s := ir.Server{Name: fmt.Sprintf("%s/%s/%s", g.gw.Namespace, g.gw.Name, l.spec.Name),
				Certificates: l.certs, ClientValidation: l.clientValidation, VirtualHosts: b.presenting(g, virtualHosts([]*listener{l}))}
			if l.spec.Hostname != nil {
				s.SNI = []string{string(*l.spec.Hostname)}
			}
			il.Servers = append(il.Servers, s)
		}
		for key, il := range byPort {
			if il.Protocol == ir.HTTP {
				il.Servers = []ir.Server{{Name: il.Name, VirtualHosts: b.presenting(g, virtualHosts(gwListeners[key]))}}
			}
			if il.Protocol == ir.TLS {
				il.Servers = uniqueSNI(il.Servers)
			}
			slices.SortFunc(il.Servers, func(a, c ir.Server) int { return cmp.Compare(a.Name, c.Name) })
			out.Listeners = append(out.Listeners, *il)
		}
	}
	slices.SortFunc(out.Listeners, func(a, c ir.Listener) int {
		return cmp.Or(a.Address.Compare(c.Address), cmp.Compare(a.Port, c.Port), compareBool(a.Protocol == ir.UDP, c.Protocol == ir.UDP))
	})
	// Only the clusters something uses: a Gateway presenting a client
	// certificate uses its own variants of the TLS clusters (presenting).
	used := referencedClusters(out.Listeners)
	for name, c := range b.clusters {
		if used[name] {
			out.Clusters = append(out.Clusters, c)
		}
	}
	slices.SortFunc(out.Clusters, func(a, c ir.Cluster) int { return cmp.Compare(a.Name, c.Name) })
	return out
}

// referencedClusters are the clusters the listeners' servers and routes
// name: backends, mirrors, authorization servers.
func referencedClusters(ls []ir.Listener) map[string]bool {
	out := map[string]bool{}
	for _, l := range ls {
		for _, s := range l.Servers {
			for _, be := range s.Backends {
				out[be.Cluster] = true
			}
			for _, vh := range s.VirtualHosts {
				for _, r := range vh.Routes {
					for _, be := range r.Backends {
						out[be.Cluster] = true
					}
					for _, m := range r.Mirrors {
						out[m.Cluster] = true
					}
					if r.ExtAuth != nil {
						out[r.ExtAuth.Cluster] = true
					}
				}
			}
		}
	}
	return out
}

// presenting returns vhs with g's client certificate presented to the
// backends they speak TLS to: each such cluster is replaced by one of the
// same endpoints and TLS with the certificate (Gateways presenting
// different certificates, or none, cannot share a cluster).
func (b *builder) presenting(g *gateway, vhs []ir.VirtualHost) []ir.VirtualHost {
	if g.backendCert == nil {
		return vhs
	}
	variant := func(name string) string {
		c, ok := b.clusters[name]
		if !ok || c.TLS == nil {
			return name
		}
		c.Name = name + "/client/" + g.backendCert.Name
		t := *c.TLS
		t.ClientCertificate = g.backendCert
		c.TLS = &t
		b.clusters[c.Name] = c
		return c.Name
	}
	out := slices.Clone(vhs)
	for i := range out {
		out[i].Routes = slices.Clone(out[i].Routes)
		for j := range out[i].Routes {
			r := &out[i].Routes[j]
			r.Backends = slices.Clone(r.Backends)
			for k := range r.Backends {
				r.Backends[k].Cluster = variant(r.Backends[k].Cluster)
			}
			r.Mirrors = slices.Clone(r.Mirrors)
			for k := range r.Mirrors {
				r.Mirrors[k].Cluster = variant(r.Mirrors[k].Cluster)
			}
			if r.ExtAuth != nil {
				ea := *r.ExtAuth
				ea.Cluster = variant(ea.Cluster)
				r.ExtAuth = &ea
			}
		}
	}
	return out
}

// virtualHosts makes one virtual host per hostname of the listeners (of
// one port) and of their routes. A hostname's routes are those of the most
// specific listener whose hostname covers it (listener isolation: a
// request is served by the routes of the listener it matches best, not by
// routes of a broader listener), in Gateway API precedence order.
func virtualHosts(ls []*listener) []ir.VirtualHost {
	domains := map[string]bool{}
	for _, l := range ls {
		domains[listenerHost(l)] = true
		for _, r := range l.routes {
			for _, h := range r.hostnames {
				domains[h] = true
			}
		}
	}
	var out []ir.VirtualHost
	for d := range domains {
		var best *listener
		for _, l := range ls {
			if lh := listenerHost(l); coversHost(lh, d) && (best == nil || moreSpecific(lh, listenerHost(best))) {
				best = l
			}
		}
		if best == nil {
			continue
		}
		var rs []attachedRoute
		for _, r := range best.routes {
			if slices.ContainsFunc(r.hostnames, func(h string) bool { return coversHost(h, d) }) {
				rs = append(rs, r)
			}
		}
		// The routes with the most specific hostname matching d come
		// first, then the matches' own precedence (HTTPRouteSpec.Hostnames).
		slices.SortStableFunc(rs, func(a, c attachedRoute) int {
			an, aw := hostSpecificity(a.hostnames, d)
			cn, cw := hostSpecificity(c.hostnames, d)
			return cmp.Or(-cmp.Compare(an, cn), -cmp.Compare(aw, cw), comparePrecedence(a.prec, c.prec))
		})
		vh := ir.VirtualHost{Name: d, Domains: []string{d}}
		for i, r := range rs {
			if i > 0 && rs[i-1].route.Name == r.route.Name {
				continue
			}
			vh.Routes = append(vh.Routes, withRedirectPort(r.route, listenerScheme(best), uint16(best.spec.Port), d))
		}
		out = append(out, vh)
	}
	slices.SortFunc(out, func(a, c ir.VirtualHost) int { return cmp.Compare(a.Name, c.Name) })
	return out
}

// hostSpecificity is how specific the most specific of a route's
// hostnames covering host is: the characters of a matching non-wildcard
// hostname, then of a matching wildcard one.
func hostSpecificity(hostnames []string, host string) (exact, wildcard int) {
	for _, h := range hostnames {
		switch {
		case !coversHost(h, host):
		case strings.HasPrefix(h, "*"):
			wildcard = max(wildcard, len(h))
		default:
			exact = max(exact, len(h))
		}
	}
	return exact, wildcard
}

func listenerHost(l *listener) string {
	if l.spec.Hostname == nil || *l.spec.Hostname == "" {
		return "*"
	}
	return string(*l.spec.Hostname)
}

// listenerScheme is the scheme of l's requests: "https" where l
// terminates TLS, else "http".
func listenerScheme(l *listener) string {
	if l.spec.Protocol == gwv1.HTTPSProtocolType {
		return "https"
	}
	return "http"
}

// coversHost reports whether pattern ("*", "*.suffix" or a name) covers
// host (the same forms).
func coversHost(pattern, host string) bool {
	return pattern == "*" || hostMatches(pattern, host)
}

// moreSpecific reports whether listener hostname a is more specific than
// b: a name before a wildcard, a longer wildcard before a shorter, "*"
// last.
func moreSpecific(a, b string) bool {
	wa, wb := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	if wa != wb {
		return !wa
	}
	return len(a) > len(b)
}

// withRedirectPort gives a redirect the port Gateway API says when it
// names none (the scheme's well-known port when the scheme changes, else
// the listener's), on the virtual host of domain of a listener of
// listenerScheme and listenerPort. A Location that would carry its
// scheme's well-known port carries none (the spec: SHOULD NOT add it):
// the redirect then sets no port, and Envoy writes the host without one
// where the redirect names the host (domain, where it is one name), or
// writes the request's host, whose port, if any, is the listener's
// well-known one, which Envoy drops on a scheme change. Otherwise the
// port stays explicit.
func withRedirectPort(r ir.Route, listenerScheme string, listenerPort uint16, domain string) ir.Route {
	if r.Redirect == nil {
		return r
	}
	rd := *r.Redirect
	scheme := cmp.Or(rd.Scheme, listenerScheme)
	if rd.Port == 0 {
		rd.Port = listenerPort
		if scheme != listenerScheme {
			rd.Port = wellKnownPort(scheme)
		}
	}
	if rd.Port == wellKnownPort(scheme) {
		switch {
		case rd.Hostname != "":
			rd.Port = 0
		case !strings.Contains(domain, "*"):
			rd.Hostname, rd.Port = domain, 0
		case listenerPort == wellKnownPort(listenerScheme):
			rd.Port = 0
		}
	}
	r.Redirect = &rd
	return r
}

// wellKnownPort is scheme's default port ("http" or "https").
func wellKnownPort(scheme string) uint16 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// tlsServers are a TLS listener's servers: one per hostname of its routes
// (oldest route first), each forwarding the connections whole to the
// route's backends: as they come (Passthrough) or, with the listener's
// certificates, the plaintext inside (Terminate).
func tlsServers(g *gateway, l *listener) []ir.Server {
	routes := slices.Clone(l.routes)
	slices.SortStableFunc(routes, func(a, c attachedRoute) int { return comparePrecedence(a.prec, c.prec) })
	var out []ir.Server
	for _, r := range routes {
		if r.route.DirectResponse != 0 || len(r.route.Backends) == 0 {
			continue // no valid backend: the connection is refused
		}
		for _, h := range r.hostnames {
			s := ir.Server{Name: fmt.Sprintf("%s/%s/%s/%s", g.gw.Namespace, g.gw.Name, l.spec.Name, h), Backends: r.route.Backends, Certificates: l.certs}
			if h != "*" {
				s.SNI = []string{h}
			}
			out = append(out, s)
		}
	}
	return out
}

// forwardServer is a TCP or UDP listener's server: the backends of the
// first rule of the route it forwards to (none when that rule has no
// valid backend: connections are refused, datagrams dropped). A UDP
// server's backends are one (udp_proxy routes to one cluster): several
// are weighed in one cluster, without those that do not resolve.
func (b *builder) forwardServer(g *gateway, l *listener) []ir.Server {
	routes := slices.Clone(l.routes)
	slices.SortStableFunc(routes, func(a, c attachedRoute) int { return comparePrecedence(a.prec, c.prec) })
	if len(routes) == 0 || routes[0].route.DirectResponse != 0 || len(routes[0].route.Backends) == 0 {
		return nil
	}
	s := ir.Server{Name: fmt.Sprintf("%s/%s/%s", g.gw.Namespace, g.gw.Name, l.spec.Name), Backends: routes[0].route.Backends}
	if l.spec.Protocol == gwv1.UDPProtocolType {
		valid := slices.DeleteFunc(slices.Clone(s.Backends), func(be ir.Backend) bool { return be.Invalid })
		if len(valid) > 1 {
			valid = []ir.Backend{b.combine(s.Name+"/weighted", valid)}
		}
		s.Backends = valid
	}
	return []ir.Server{s}
}

// combinable reports whether backends can be weighed in one cluster
// (combine): all resolve, to plaintext clusters of one protocol, and none
// changes its requests' headers.
func (b *builder) combinable(backends []ir.Backend) bool {
	for _, be := range backends {
		c, ok := b.clusters[be.Cluster]
		if be.Invalid || !ok || c.TLS != nil || c.Protocol != b.clusters[backends[0].Cluster].Protocol || !be.RequestHeaders.IsZero() {
			return false
		}
	}
	return true
}

// combine makes the cluster name (an IR cluster name) of the backends'
// endpoints, a locality per backend with its weight, and returns the one
// backend that stands for them. The backends must be combinable.
func (b *builder) combine(name string, backends []ir.Backend) ir.Backend {
	c := ir.Cluster{Name: name, Protocol: b.clusters[backends[0].Cluster].Protocol}
	for _, be := range backends {
		c.Localities = append(c.Localities, ir.Locality{Name: be.Cluster, Weight: be.Weight, Endpoints: b.clusters[be.Cluster].Endpoints})
	}
	b.clusters[name] = c
	return ir.Backend{Cluster: name, Weight: 1}
}

// uniqueSNI keeps the first server of every SNI set (Envoy refuses two
// filter chains with the same match).
func uniqueSNI(servers []ir.Server) []ir.Server {
	seen := map[string]bool{}
	var out []ir.Server
	for _, s := range servers {
		key := strings.Join(s.SNI, ",")
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, s)
	}
	return out
}

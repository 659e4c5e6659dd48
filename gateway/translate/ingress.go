package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
)

// Ingress support: every Ingress of Membrane's IngressClasses is expressed
// as the Gateway and HTTPRoute it amounts to (a dedicated Ingress gets a
// Gateway of its own, the shared ones share one), so the rest of the
// translation (listeners, certificates, route precedence, clusters) is the
// Gateway API's.

// IngressControllerName is the IngressClass spec.controller Membrane serves.
const IngressControllerName = "membrane.io/ingress-controller"

// Load balancer modes and the annotations that choose them (Membrane's wins
// over Cilium's; an IngressClass's annotation is the default of its
// Ingresses).
const (
	ModeDedicated        = "dedicated"
	ModeShared           = "shared"
	ModeAnnotation       = "ingress.membrane.io/loadbalancer-mode"
	CiliumModeAnnotation = "ingress.cilium.io/loadbalancer-mode"
)

// Per-Ingress options, by Membrane's annotation or Cilium's (Membrane's
// wins): force-https ("true"/"enabled" or "false"/"disabled") redirects
// port 80's requests for the Ingress's TLS hosts to HTTPS (301);
// request-timeout (a Go duration, "0s": none) bounds every request of its
// rules, as an HTTPRoute rule's timeouts.request.
const (
	ForceHTTPSAnnotation           = "ingress.membrane.io/force-https"
	CiliumForceHTTPSAnnotation     = "ingress.cilium.io/force-https"
	RequestTimeoutAnnotation       = "ingress.membrane.io/request-timeout"
	CiliumRequestTimeoutAnnotation = "ingress.cilium.io/request-timeout"
	TLSPassthroughAnnotation       = "ingress.membrane.io/tls-passthrough"
	CiliumTLSPassthroughAnnotation = "ingress.cilium.io/tls-passthrough"
)

const (
	defaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"
	legacyClassAnnotation  = "kubernetes.io/ingress.class"
	// ingressGatewayPrefix makes the synthetic Gateways' names: "/" and ":"
	// are not allowed in object names, so they never meet a real Gateway.
	ingressGatewayPrefix = "ingress:"
)

// SharedIngressKey is the address key (in Input.Addresses) of the Gateway
// every shared Ingress is served by.
var SharedIngressKey = types.NamespacedName{Name: ingressGatewayPrefix + "shared"}

// IngressStatus is one Ingress's status: its address (none until
// assigned) and what is wrong with it (each one an Event on the Ingress).
type IngressStatus struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Mode      string   `json:"mode"`
	Address   string   `json:"address,omitempty"`
	Problems  []string `json:"problems,omitempty"`
}

// OwnedIngress is one Ingress of Membrane's with its load balancer mode and
// the key its address is assigned under.
type OwnedIngress struct {
	Ingress *networkingv1.Ingress
	Mode    string
	Key     types.NamespacedName
	// Problem is set for an unknown mode (the default mode is used).
	Problem string
}

// OwnedIngresses are the Ingresses of Membrane's IngressClasses, sorted by
// namespace and name: ingressClassName naming one, the legacy
// kubernetes.io/ingress.class annotation naming one, or no class and one
// of Membrane's classes is the default.
func OwnedIngresses(classes []networkingv1.IngressClass, ings []networkingv1.Ingress) []OwnedIngress {
	ours := map[string]*networkingv1.IngressClass{}
	var def *networkingv1.IngressClass
	for i := range classes {
		c := &classes[i]
		if c.Spec.Controller != IngressControllerName {
			continue
		}
		ours[c.Name] = c
		if c.Annotations[defaultClassAnnotation] == "true" && (def == nil || c.Name < def.Name) {
			def = c
		}
	}
	var out []OwnedIngress
	for i := range ings {
		ing := &ings[i]
		var class *networkingv1.IngressClass
		switch {
		case ing.Spec.IngressClassName != nil:
			class = ours[*ing.Spec.IngressClassName]
		case ing.Annotations[legacyClassAnnotation] != "":
			class = ours[ing.Annotations[legacyClassAnnotation]]
		default:
			class = def
		}
		if class == nil {
			continue
		}
		o := OwnedIngress{Ingress: ing, Mode: ModeDedicated}
		if m := class.Annotations[ModeAnnotation]; m == ModeShared || m == ModeDedicated {
			o.Mode = m
		}
		field, m := annotation(ing, ModeAnnotation, CiliumModeAnnotation)
		switch m {
		case "":
		case ModeShared, ModeDedicated:
			o.Mode = m
		default:
			o.Problem = fmt.Sprintf("annotation %s: unknown load balancer mode %q (want dedicated or shared); using %s", field, m, o.Mode)
		}
		o.Key = SharedIngressKey
		if o.Mode == ModeDedicated {
			o.Key = types.NamespacedName{Namespace: ing.Namespace, Name: ingressGatewayPrefix + ing.Name}
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b OwnedIngress) int {
		return cmp.Or(cmp.Compare(a.Ingress.Namespace, b.Ingress.Namespace), cmp.Compare(a.Ingress.Name, b.Ingress.Name))
	})
	return out
}

// annotation is the Ingress's annotation ours, else theirs (Cilium's
// name for it), with the name it was found under.
func annotation(ing *networkingv1.Ingress, ours, theirs string) (field, value string) {
	if v := ing.Annotations[ours]; v != "" {
		return ours, v
	}
	return theirs, ing.Annotations[theirs]
}

// ingressOptions are an Ingress's options from its annotations.
type ingressOptions struct {
	forceHTTPS bool
	timeout    *gwv1.Duration // nil: none set
	// passthrough: port 443 forwards TLS connections whole to the rules'
	// backends, chosen by SNI (the backends terminate TLS).
	passthrough bool
}

// parseIngressOptions reads the Ingress's options; a value that does not
// parse is named in problems and the option left unset.
func parseIngressOptions(ing *networkingv1.Ingress) (o ingressOptions, problems []string) {
	for _, b := range []struct {
		ours, theirs, off string
		on                *bool
	}{
		{ForceHTTPSAnnotation, CiliumForceHTTPSAnnotation, "HTTPS is not forced", &o.forceHTTPS},
		{TLSPassthroughAnnotation, CiliumTLSPassthroughAnnotation, "TLS is not passed through", &o.passthrough},
	} {
		switch field, v := annotation(ing, b.ours, b.theirs); v {
		case "", "false", "disabled":
		case "true", "enabled":
			*b.on = true
		default:
			problems = append(problems, fmt.Sprintf("annotation %s: %q is not true or false (enabled or disabled); %s", field, v, b.off))
		}
	}
	if field, v := annotation(ing, RequestTimeoutAnnotation, CiliumRequestTimeoutAnnotation); v != "" {
		d, err := time.ParseDuration(v)
		var gd gwv1.Duration
		if err == nil {
			gd, err = gatewayDuration(d)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s: %q: %v; no request timeout is set", field, v, err))
		} else {
			o.timeout = &gd
		}
	}
	return o, problems
}

// gatewayDuration writes d as a Gateway API Duration (hours, minutes,
// seconds and milliseconds of up to 5 digits each).
func gatewayDuration(d time.Duration) (gwv1.Duration, error) {
	switch {
	case d < 0:
		return "", fmt.Errorf("negative")
	case d%time.Millisecond != 0:
		return "", fmt.Errorf("not a whole number of milliseconds")
	case d >= 100000*time.Hour:
		return "", fmt.Errorf("longer than 99999h")
	case d == 0:
		return "0s", nil
	}
	var b strings.Builder
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	return gwv1.Duration(b.String()), nil
}

// IngressAddressesFromStatus reads the Ingresses' addresses from their
// status (as the operator wrote them), keyed as OwnedIngress.Key: the
// agents' view of the assignment.
func IngressAddressesFromStatus(owned []OwnedIngress) map[types.NamespacedName]netip.Addr {
	out := map[types.NamespacedName]netip.Addr{}
	for _, o := range owned {
		if _, ok := out[o.Key]; ok {
			continue
		}
		for _, lb := range o.Ingress.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(lb.IP); err == nil && ip.Is4() {
				out[o.Key] = ip
				break
			}
		}
	}
	return out
}

// ingressSet is the Gateways and HTTPRoutes the Ingresses amount to.
type ingressSet struct {
	owned    []OwnedIngress
	gateways []gwv1.Gateway
	routes   []gwv1.HTTPRoute
	// tlsRoutes are the TLS passthrough Ingresses' rules.
	tlsRoutes []gwv1alpha2.TLSRoute
	// problems found while expressing them, per Ingress.
	problems map[types.NamespacedName][]string
	// tlsListener names the HTTPS listener each TLS entry became, to report
	// its certificate problems on the Ingress: listener key → Ingresses.
	tlsListeners map[string][]types.NamespacedName
}

// expandIngresses expresses the Ingresses of Membrane's classes as
// Gateways and HTTPRoutes: port 80 for every Ingress, port 443 with one
// HTTPS listener per TLS host (its Secret as the certificate). The rules
// become one HTTPRoute per Ingress rule (the host as its hostname), the
// default backend one more without a hostname. Prefix is Gateway API's
// PathPrefix (element-wise, as Kubernetes defines Prefix);
// ImplementationSpecific is Prefix. The options (parseIngressOptions) set
// the rules' request timeout and, forcing HTTPS, attach the rules of the
// TLS hosts to their HTTPS listeners only and redirect port 80's requests
// for those hosts. A TLS passthrough Ingress is a TLS listener and route
// per host instead (passthrough).
func expandIngresses(in Input, services map[types.NamespacedName]*corev1.Service) ingressSet {
	s := ingressSet{owned: OwnedIngresses(in.IngressClasses, in.Ingresses),
		problems: map[types.NamespacedName][]string{}, tlsListeners: map[string][]types.NamespacedName{}}
	byKey := map[types.NamespacedName]*gwv1.Gateway{}
	var keys []types.NamespacedName
	for _, o := range s.owned {
		ing := o.Ingress
		nn := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		if o.Problem != "" {
			s.problems[nn] = append(s.problems[nn], o.Problem)
		}
		opts, problems := parseIngressOptions(ing)
		s.problems[nn] = append(s.problems[nn], problems...)
		var tlsHosts []string // "": every host
		gw, ok := byKey[o.Key]
		if !ok {
			from := gwv1.NamespacesFromAll
			gw = &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: o.Key.Namespace, Name: o.Key.Name, CreationTimestamp: ing.CreationTimestamp}}
			gw.Spec.Listeners = []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType,
				AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &from}}}}
			byKey[o.Key] = gw
			keys = append(keys, o.Key)
		}
		if opts.passthrough {
			s.passthrough(o, nn, gw, services)
			continue
		}
		for i, t := range ing.Spec.TLS {
			hosts := t.Hosts
			if len(hosts) == 0 {
				hosts = []string{""}
			}
			tlsHosts = append(tlsHosts, hosts...)
			for _, h := range hosts {
				name := "https"
				if h != "" {
					name = "https-" + h
				}
				if slices.ContainsFunc(gw.Spec.Listeners, func(l gwv1.Listener) bool { return string(l.Name) == name }) {
					s.problems[nn] = append(s.problems[nn], fmt.Sprintf("spec.tls[%d]: host %q has a certificate of another Ingress on the shared address already; that one is served", i, h))
					continue
				}
				if hasProtocol(gw, gwv1.TLSProtocolType) {
					s.problems[nn] = append(s.problems[nn], fmt.Sprintf("spec.tls[%d]: port 443 of the shared address passes TLS through for another Ingress; HTTPS for host %q is not served", i, h))
					continue
				}
				from := gwv1.NamespacesFromAll
				l := gwv1.Listener{Name: gwv1.SectionName(name), Port: 443, Protocol: gwv1.HTTPSProtocolType,
					AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &from}},
					TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{
						Name: gwv1.ObjectName(t.SecretName), Namespace: ptr(gwv1.Namespace(ing.Namespace))}}}}
				if h != "" {
					l.Hostname = ptr(gwv1.Hostname(h))
				}
				gw.Spec.Listeners = append(gw.Spec.Listeners, l)
				lk := o.Key.String() + "/" + name
				s.tlsListeners[lk] = append(s.tlsListeners[lk], nn)
			}
		}
		slices.Sort(tlsHosts)
		tlsHosts = slices.Compact(tlsHosts)
		// parents are the listeners serving a rule of host ("": every
		// host): the whole Gateway, or with force-https, for a host the
		// Ingress has TLS for, its HTTPS listeners only (port 80 redirects).
		parents := func(host string) []gwv1.ParentReference {
			whole := gwv1.ParentReference{Name: gwv1.ObjectName(o.Key.Name), Namespace: ptr(gwv1.Namespace(o.Key.Namespace))}
			sections := httpsSections(tlsHosts, host)
			if !opts.forceHTTPS || len(sections) == 0 {
				return []gwv1.ParentReference{whole}
			}
			var out []gwv1.ParentReference
			for _, sn := range sections {
				p := whole
				p.SectionName = ptr(sn)
				out = append(out, p)
			}
			return out
		}
		route := func(suffix string, parents []gwv1.ParentReference, hostnames []gwv1.Hostname, rules []gwv1.HTTPRouteRule) {
			r := gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ing.Namespace, Name: ing.Name + "/" + suffix,
				CreationTimestamp: ing.CreationTimestamp, Generation: ing.Generation}}
			r.Spec.ParentRefs = parents
			r.Spec.Hostnames = hostnames
			r.Spec.Rules = rules
			s.routes = append(s.routes, r)
		}
		for i, rule := range ing.Spec.Rules {
			var hostnames []gwv1.Hostname
			if rule.Host != "" {
				hostnames = []gwv1.Hostname{gwv1.Hostname(rule.Host)}
			}
			if rule.HTTP == nil {
				continue
			}
			var rules []gwv1.HTTPRouteRule
			for j, p := range rule.HTTP.Paths {
				field := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
				m := gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/")}}
				if p.Path != "" {
					m.Path.Value = ptr(p.Path)
				}
				if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
					m.Path.Type = ptr(gwv1.PathMatchExact)
				}
				be, problem := ingressBackend(ing, p.Backend, field+".backend", services)
				if problem != "" {
					s.problems[nn] = append(s.problems[nn], problem)
				}
				rules = append(rules, gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{m}, BackendRefs: be, Timeouts: opts.timeouts()})
			}
			route(fmt.Sprintf("rule-%d", i), parents(rule.Host), hostnames, rules)
		}
		if db := ing.Spec.DefaultBackend; db != nil {
			be, problem := ingressBackend(ing, *db, "spec.defaultBackend", services)
			if problem != "" {
				s.problems[nn] = append(s.problems[nn], problem)
			}
			m := gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/")}}
			route("default", parents(""), nil, []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{m}, BackendRefs: be, Timeouts: opts.timeouts()}})
		}
		if opts.forceHTTPS {
			// Every request on port 80 for a TLS host, whatever its path:
			// the host's exact name outranks the rules without one.
			httpOnly := []gwv1.ParentReference{{Name: gwv1.ObjectName(o.Key.Name), Namespace: ptr(gwv1.Namespace(o.Key.Namespace)), SectionName: ptr(gwv1.SectionName("http"))}}
			redirect := []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/")}}},
				Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect,
					RequestRedirect: &gwv1.HTTPRequestRedirectFilter{Scheme: ptr("https"), StatusCode: ptr(301)}}},
			}}
			for i, h := range tlsHosts {
				var hostnames []gwv1.Hostname
				if h != "" {
					hostnames = []gwv1.Hostname{gwv1.Hostname(h)}
				}
				route(fmt.Sprintf("force-https-%d", i), httpOnly, hostnames, redirect)
			}
		}
	}
	for _, k := range keys {
		s.gateways = append(s.gateways, *byKey[k])
	}
	return s
}

// passthrough expresses a TLS passthrough Ingress o (nn) on gw: per rule,
// a TLS listener on port 443 for its host, in Passthrough mode, and a
// TLS route to the backend of its first path. What passthrough cannot use
// (TLS entries, the default backend, rules without a host, more paths) is
// a problem of the Ingress.
func (s *ingressSet) passthrough(o OwnedIngress, nn types.NamespacedName, gw *gwv1.Gateway, services map[types.NamespacedName]*corev1.Service) {
	ing := o.Ingress
	problem := func(format string, args ...any) {
		s.problems[nn] = append(s.problems[nn], fmt.Sprintf(format, args...))
	}
	if len(ing.Spec.TLS) > 0 {
		problem("spec.tls: not used with TLS passthrough (the backends terminate TLS with their own certificates)")
	}
	if ing.Spec.DefaultBackend != nil {
		problem("spec.defaultBackend: not used with TLS passthrough (a connection is routed by its SNI, which needs a host)")
	}
	for i, rule := range ing.Spec.Rules {
		switch {
		case rule.Host == "":
			problem("spec.rules[%d]: TLS passthrough needs a host (the SNI connections are routed by); the rule is not served", i)
			continue
		case rule.HTTP == nil || len(rule.HTTP.Paths) == 0:
			problem("spec.rules[%d]: no backend (http.paths); the rule is not served", i)
			continue
		case len(rule.HTTP.Paths) > 1:
			problem("spec.rules[%d].http.paths[1:]: not used with TLS passthrough (the gateway sees no paths): every connection for %s goes to paths[0]'s backend", i, rule.Host)
		}
		name := gwv1.SectionName("tls-passthrough-" + rule.Host)
		switch {
		case slices.ContainsFunc(gw.Spec.Listeners, func(l gwv1.Listener) bool { return l.Name == name }):
			problem("spec.rules[%d]: host %q is passed through for another Ingress on the shared address already; that one is served", i, rule.Host)
			continue
		case hasProtocol(gw, gwv1.HTTPSProtocolType):
			problem("spec.rules[%d]: port 443 of the shared address serves HTTPS for another Ingress; TLS for host %q is not passed through", i, rule.Host)
			continue
		}
		be, p := ingressBackend(ing, rule.HTTP.Paths[0].Backend, fmt.Sprintf("spec.rules[%d].http.paths[0].backend", i), services)
		if p != "" {
			problem("%s", p)
		}
		from := gwv1.NamespacesFromAll
		gw.Spec.Listeners = append(gw.Spec.Listeners, gwv1.Listener{Name: name, Port: 443, Protocol: gwv1.TLSProtocolType,
			Hostname: ptr(gwv1.Hostname(rule.Host)), TLS: &gwv1.ListenerTLSConfig{Mode: ptr(gwv1.TLSModePassthrough)},
			AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &from}}})
		r := gwv1alpha2.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ing.Namespace, Name: fmt.Sprintf("%s/passthrough-%d", ing.Name, i),
			CreationTimestamp: ing.CreationTimestamp, Generation: ing.Generation}}
		r.Spec.ParentRefs = []gwv1.ParentReference{{Name: gwv1.ObjectName(o.Key.Name), Namespace: ptr(gwv1.Namespace(o.Key.Namespace)), SectionName: ptr(name)}}
		r.Spec.Hostnames = []gwv1.Hostname{gwv1.Hostname(rule.Host)}
		var refs []gwv1.BackendRef
		for _, b := range be {
			refs = append(refs, b.BackendRef)
		}
		r.Spec.Rules = []gwv1alpha2.TLSRouteRule{{BackendRefs: refs}}
		s.tlsRoutes = append(s.tlsRoutes, r)
	}
}

// hasProtocol reports whether gw has a listener of protocol p.
func hasProtocol(gw *gwv1.Gateway, p gwv1.ProtocolType) bool {
	return slices.ContainsFunc(gw.Spec.Listeners, func(l gwv1.Listener) bool { return l.Protocol == p })
}

// timeouts are the route rule timeouts of the Ingress's options (nil:
// none).
func (o ingressOptions) timeouts() *gwv1.HTTPRouteTimeouts {
	if o.timeout == nil {
		return nil
	}
	return &gwv1.HTTPRouteTimeouts{Request: o.timeout}
}

// httpsSections are the HTTPS listeners an Ingress's TLS hosts (tlsHosts;
// "": a TLS entry without hosts) make that serve its rules of host ("": a
// rule for every host, which only an entry without hosts serves whole).
func httpsSections(tlsHosts []string, host string) []gwv1.SectionName {
	var out []gwv1.SectionName
	for _, th := range tlsHosts {
		switch {
		case th == "":
			out = append(out, "https")
		case host != "" && hostCovers(th, host):
			out = append(out, gwv1.SectionName("https-"+th))
		}
	}
	return out
}

// hostCovers reports whether the TLS host th (exact, or "*." and a
// suffix: one more label) serves the rule host.
func hostCovers(th, host string) bool {
	if th == host {
		return true
	}
	suffix, ok := strings.CutPrefix(th, "*")
	if !ok {
		return false
	}
	label, ok := strings.CutSuffix(host, suffix)
	return ok && label != "" && !strings.ContainsAny(label, ".*")
}

// ingressBackend is the backendRef of an Ingress backend; a backend that
// does not resolve is kept (its requests get 500) and named in problem.
func ingressBackend(ing *networkingv1.Ingress, be networkingv1.IngressBackend, field string, services map[types.NamespacedName]*corev1.Service) ([]gwv1.HTTPBackendRef, string) {
	ref := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{}}}
	if be.Resource != nil || be.Service == nil {
		ref.Group, ref.Kind, ref.Name = ptr(gwv1.Group("unsupported")), ptr(gwv1.Kind("Resource")), "unsupported"
		return []gwv1.HTTPBackendRef{ref}, field + ": resource backends are not supported (Services are)"
	}
	ref.Name = gwv1.ObjectName(be.Service.Name)
	svc, ok := services[types.NamespacedName{Namespace: ing.Namespace, Name: be.Service.Name}]
	if !ok {
		ref.Port = ptr(gwv1.PortNumber(be.Service.Port.Number))
		return []gwv1.HTTPBackendRef{ref}, fmt.Sprintf("%s.service: Service %s/%s not found", field, ing.Namespace, be.Service.Name)
	}
	for _, sp := range svc.Spec.Ports {
		if (be.Service.Port.Name != "" && sp.Name == be.Service.Port.Name) || (be.Service.Port.Name == "" && sp.Port == be.Service.Port.Number) {
			ref.Port = ptr(gwv1.PortNumber(sp.Port))
			return []gwv1.HTTPBackendRef{ref}, ""
		}
	}
	port := be.Service.Port.Name
	if port == "" {
		port = fmt.Sprint(be.Service.Port.Number)
	}
	ref.Port = ptr(gwv1.PortNumber(max(be.Service.Port.Number, 1)))
	if be.Service.Port.Name != "" {
		ref.Port = ptr(gwv1.PortNumber(65535)) // no such port: the backend stays invalid
	}
	return []gwv1.HTTPBackendRef{ref}, fmt.Sprintf("%s.service.port: Service %s/%s has no port %s", field, ing.Namespace, be.Service.Name, port)
}

// ingressStatus is every owned Ingress's status once the Gateways they
// amount to are built: the address, and the problems, with the
// certificate problems of their HTTPS listeners.
func (b *builder) ingressStatus(s ingressSet) []IngressStatus {
	for _, g := range b.gateways {
		if !g.ingress {
			continue
		}
		for _, l := range g.listeners {
			if l.valid {
				continue
			}
			lk := types.NamespacedName{Namespace: g.gw.Namespace, Name: g.gw.Name}.String() + "/" + string(l.spec.Name)
			for _, nn := range s.tlsListeners[lk] {
				for _, c := range l.conditions {
					if c.Status == metav1.ConditionFalse && c.Type == string(gwv1.ListenerConditionResolvedRefs) {
						msg := strings.Replace(c.Message, "tls.certificateRefs[0]", "spec.tls secretName", 1)
						s.problems[nn] = append(s.problems[nn], fmt.Sprintf("host %s: %s; HTTPS for it is not served", hostOrAny(l.spec.Hostname), msg))
					}
				}
			}
		}
	}
	var out []IngressStatus
	for _, o := range s.owned {
		nn := types.NamespacedName{Namespace: o.Ingress.Namespace, Name: o.Ingress.Name}
		st := IngressStatus{Namespace: nn.Namespace, Name: nn.Name, Mode: o.Mode, Problems: s.problems[nn]}
		if g := b.byName[o.Key]; g != nil && g.address.IsValid() {
			st.Address = g.address.String()
		} else {
			st.Problems = append(st.Problems, "no address assigned yet (pool exhausted or not configured)")
		}
		out = append(out, st)
	}
	return out
}

func hostOrAny(h *gwv1.Hostname) string {
	if h == nil {
		return "*"
	}
	return string(*h)
}

// addIngresses adds the Gateways the Ingresses amount to and returns them
// with their routes (attached after the Gateway API's own).
func (b *builder) addIngresses() ingressSet {
	s := expandIngresses(b.in, b.services)
	for i := range s.gateways {
		gw := &s.gateways[i]
		nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		g := &gateway{gw: gw, address: b.in.Addresses[nn], ingress: true}
		b.gateways = append(b.gateways, g)
		b.byName[nn] = g
	}
	return s
}

package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

const (
	gatewayGroup  = gwv1.GroupName
	kindGateway   = "Gateway"
	kindHTTPRoute = "HTTPRoute"
	kindGRPCRoute = "GRPCRoute"
	kindTLSRoute  = "TLSRoute"
	kindTCPRoute  = "TCPRoute"
	kindUDPRoute  = "UDPRoute"
	kindService   = "Service"
	kindSecret    = "Secret"
)

// Build translates in into the IR the node Envoys serve and the status of
// every object of Membrane's GatewayClasses. It never fails: what is wrong
// in the input becomes a status condition and stays out of the IR.
func Build(in Input) (ir.IR, Status) {
	m, st, _ := BuildWithReferences(in)
	return m, st
}

// References are the Secrets and ConfigMaps a translation reads the bytes
// of: the Secrets of the listeners terminating TLS and of the backend
// client certificates of Membrane's Gateways (those a ReferenceGrant
// permits, when in another namespace) and of Membrane's Ingresses, the
// ConfigMaps of the BackendTLSPolicies that apply to a
// backend of theirs and those of the Gateways' client certificate
// validation (spec.tls.frontend; permitted ones). Translating an Input
// whose Secrets and ConfigMaps are only these gives the same IR: the node
// agents read no others.
type References struct {
	Secrets    []types.NamespacedName
	ConfigMaps []types.NamespacedName
}

// BuildWithReferences is Build, and the References the translation read
// (sorted).
func BuildWithReferences(in Input) (ir.IR, Status, References) {
	b := build(in)
	return b.ir(), b.st, b.references()
}

func (b *builder) references() References {
	var refs References
	for nn := range b.readSecrets {
		refs.Secrets = append(refs.Secrets, nn)
	}
	for nn := range b.readConfigMaps {
		refs.ConfigMaps = append(refs.ConfigMaps, nn)
	}
	for _, bt := range b.policies {
		if !bt.reached {
			continue
		}
		for _, ref := range bt.policy.Spec.Validation.CACertificateRefs {
			if ref.Group == "" && ref.Kind == "ConfigMap" {
				refs.ConfigMaps = append(refs.ConfigMaps, types.NamespacedName{Namespace: bt.policy.Namespace, Name: string(ref.Name)})
			}
		}
	}
	for _, l := range [][]types.NamespacedName{refs.Secrets, refs.ConfigMaps} {
		slices.SortFunc(l, func(a, c types.NamespacedName) int {
			return cmp.Or(cmp.Compare(a.Namespace, c.Namespace), cmp.Compare(a.Name, c.Name))
		})
	}
	refs.ConfigMaps = slices.Compact(refs.ConfigMaps)
	return refs
}

// build translates in; the builder keeps the status and what was read.
func build(in Input) *builder {
	b := newBuilder(in)
	ingresses := b.addIngresses()
	b.oneGatewayPerAddress()
	var st Status
	for _, gc := range b.classes {
		st.GatewayClasses = append(st.GatewayClasses, GatewayClassStatus{Name: gc.Name, Status: gwv1.GatewayClassStatus{
			Conditions: []metav1.Condition{
				condition(gwv1.GatewayClassConditionStatusAccepted, true, gwv1.GatewayClassReasonAccepted, "Accepted by membrane", gc.Generation),
				condition(gwv1.GatewayClassConditionStatusSupportedVersion, true, gwv1.GatewayClassReasonSupportedVersion, "Gateway API v1.4", gc.Generation),
			},
			SupportedFeatures: SupportedFeatures(b.in.Served),
		}})
	}
	for _, g := range b.gateways {
		b.checkListeners(g)
		b.resolveBackendCertificate(g)
	}
	for i := range b.in.HTTPRoutes {
		if rs, ok := b.attachHTTPRoute(&b.in.HTTPRoutes[i], kindHTTPRoute); ok {
			st.HTTPRoutes = append(st.HTTPRoutes, rs)
		}
	}
	for i := range b.in.TLSRoutes {
		if rs, ok := b.attachHTTPRoute(tlsAsHTTP(&b.in.TLSRoutes[i]), kindTLSRoute); ok {
			st.TLSRoutes = append(st.TLSRoutes, rs)
		}
	}
	// A TCP or UDP listener forwards to one route: the oldest.
	for _, i := range oldestFirst(len(b.in.TCPRoutes), func(i int) metav1.ObjectMeta { return b.in.TCPRoutes[i].ObjectMeta }) {
		if rs, ok := b.attachHTTPRoute(tcpAsHTTP(&b.in.TCPRoutes[i]), kindTCPRoute); ok {
			st.TCPRoutes = append(st.TCPRoutes, rs)
		}
	}
	for _, i := range oldestFirst(len(b.in.UDPRoutes), func(i int) metav1.ObjectMeta { return b.in.UDPRoutes[i].ObjectMeta }) {
		if rs, ok := b.attachHTTPRoute(udpAsHTTP(&b.in.UDPRoutes[i]), kindUDPRoute); ok {
			st.UDPRoutes = append(st.UDPRoutes, rs)
		}
	}
	for i := range b.in.GRPCRoutes {
		if rs, ok := b.attachHTTPRoute(grpcAsHTTP(&b.in.GRPCRoutes[i]), kindGRPCRoute); ok {
			st.GRPCRoutes = append(st.GRPCRoutes, rs)
		}
	}
	for i := range ingresses.routes {
		b.attachHTTPRoute(&ingresses.routes[i], kindHTTPRoute)
	}
	for i := range ingresses.tlsRoutes {
		b.attachHTTPRoute(tlsAsHTTP(&ingresses.tlsRoutes[i]), kindTLSRoute)
	}
	st.Ingresses = b.ingressStatus(ingresses)
	st.BackendTLSPolicies = b.policyStatus()
	for _, g := range b.gateways {
		if g.ingress {
			continue
		}
		st.Gateways = append(st.Gateways, GatewayStatus{Namespace: g.gw.Namespace, Name: g.gw.Name, Status: b.gatewayStatus(g)})
	}
	b.st = st
	return b
}

// oldestFirst are the indexes of n objects, oldest first (then by
// namespace and name).
func oldestFirst(n int, meta func(int) metav1.ObjectMeta) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, c int) int {
		ma, mc := meta(a), meta(c)
		return cmp.Or(ma.CreationTimestamp.Compare(mc.CreationTimestamp.Time), cmp.Compare(ma.Namespace, mc.Namespace), cmp.Compare(ma.Name, mc.Name))
	})
	return idx
}

type builder struct {
	in       Input
	classes  []*gwv1.GatewayClass
	gateways []*gateway
	byName   map[types.NamespacedName]*gateway
	services map[types.NamespacedName]*corev1.Service
	secrets  map[types.NamespacedName]*corev1.Secret
	// readSecrets are the Secrets certificates were looked up in;
	// readConfigMaps the ConfigMaps client CA certificates were.
	readSecrets, readConfigMaps map[types.NamespacedName]bool
	nsLabels                    map[string]labels.Set
	clusters                    map[string]ir.Cluster

	configMaps     map[types.NamespacedName]*corev1.ConfigMap
	policies       []*backendTLS // BackendTLSPolicies, oldest first
	policyByTarget map[policyTarget]*backendTLS
	// used collects the policies of the backends of the route being
	// translated (their ancestors are its Gateways).
	used []*backendTLS

	st Status
}

// gateway is one Gateway of Membrane's classes being translated.
type gateway struct {
	gw      *gwv1.Gateway
	address netip.Addr
	// addrReason and addrMsg say why spec.addresses cannot be honoured:
	// it is then not served.
	addrReason gwv1.GatewayConditionReason
	addrMsg    string
	listeners  []*listener
	// ingress: the Gateway some Ingresses amount to (no status of its own).
	ingress bool
	// backendCert is the client certificate presented to the backends it
	// speaks TLS to (nil: none).
	backendCert *ir.Certificate
}

// listener is one Gateway listener, its status so far and its routes.
type listener struct {
	spec           gwv1.Listener
	supportedKinds []gwv1.RouteGroupKind
	conditions     []metav1.Condition // Accepted, ResolvedRefs, Conflicted set by checkListeners
	valid          bool               // programmable
	attachable     bool               // routes attach (and count) even when it is not programmable
	certs          []ir.Certificate
	// clientValidation checks an HTTPS listener's clients' certificates.
	clientValidation *ir.ClientValidation
	attached         int
	routes           []attachedRoute
	// forwardsTo is the route a TCP or UDP listener forwards to
	// ("<namespace>/<name>"; one at most).
	forwardsTo string
}

// forwardsWhole reports whether a listener of protocol p forwards
// connections or datagrams whole to one route's backends.
func forwardsWhole(p gwv1.ProtocolType) bool {
	return p == gwv1.TCPProtocolType || p == gwv1.UDPProtocolType
}

// attachedRoute is one rule match of a route attached to a listener, with
// the hostnames it serves there.
type attachedRoute struct {
	hostnames []string
	route     ir.Route
	prec      precedence
}

func newBuilder(in Input) *builder {
	b := &builder{in: in, byName: map[types.NamespacedName]*gateway{},
		services: map[types.NamespacedName]*corev1.Service{}, secrets: map[types.NamespacedName]*corev1.Secret{},
		readSecrets: map[types.NamespacedName]bool{}, readConfigMaps: map[types.NamespacedName]bool{},
		nsLabels: map[string]labels.Set{}, clusters: map[string]ir.Cluster{},
		configMaps: map[types.NamespacedName]*corev1.ConfigMap{}, policyByTarget: map[policyTarget]*backendTLS{}}
	ours := map[string]bool{}
	for i := range in.GatewayClasses {
		gc := &in.GatewayClasses[i]
		if gc.Spec.ControllerName == ControllerName {
			b.classes = append(b.classes, gc)
			ours[gc.Name] = true
		}
	}
	slices.SortFunc(b.classes, func(a, c *gwv1.GatewayClass) int { return cmp.Compare(a.Name, c.Name) })
	for i := range in.Gateways {
		gw := &in.Gateways[i]
		if !ours[string(gw.Spec.GatewayClassName)] {
			continue
		}
		nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		g := &gateway{gw: gw, address: in.Addresses[nn]}
		var want netip.Addr
		if want, g.addrReason, g.addrMsg = RequestedAddress(gw); g.addrReason == "" && want.IsValid() && g.address != want {
			g.addrReason = gwv1.GatewayReasonAddressNotUsable
			g.addrMsg = fmt.Sprintf("spec.addresses: %s is in no MembraneLoadBalancerIPPool that selects this Gateway, or is in use", want)
		}
		if g.addrReason != "" {
			g.address = netip.Addr{}
		}
		b.gateways = append(b.gateways, g)
		b.byName[nn] = g
	}
	slices.SortFunc(b.gateways, func(a, c *gateway) int {
		return cmp.Or(cmp.Compare(a.gw.Namespace, c.gw.Namespace), cmp.Compare(a.gw.Name, c.gw.Name))
	})
	for i := range in.Services {
		s := &in.Services[i]
		b.services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for i := range in.Secrets {
		s := &in.Secrets[i]
		b.secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for _, ns := range in.Namespaces {
		b.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	for i := range in.ConfigMaps {
		cm := &in.ConfigMaps[i]
		b.configMaps[types.NamespacedName{Namespace: cm.Namespace, Name: cm.Name}] = cm
	}
	b.checkBackendTLS()
	return b
}

// oneGatewayPerAddress leaves an address that several Gateways (or
// Ingress addresses) have with the one the address assignment keeps (the
// oldest, then by its claim's key: lbipam's order); the others get no
// listeners until they have an address of their own. The node agents read
// the addresses from the objects' status, which says so for a moment while
// the operator moves an address from one to another; two listeners cannot
// bind one address and port.
func (b *builder) oneGatewayPerAddress() {
	claimKey := func(g *gateway) string {
		nn := types.NamespacedName{Namespace: g.gw.Namespace, Name: g.gw.Name}
		if g.ingress {
			return IngressClaimKey(nn)
		}
		return GatewayClaimKey(nn)
	}
	byAddr := map[netip.Addr]*gateway{}
	for _, g := range b.gateways {
		if !g.address.IsValid() {
			continue
		}
		o, ok := byAddr[g.address]
		if !ok {
			byAddr[g.address] = g
			continue
		}
		keep, drop := o, g
		if cmp.Or(g.gw.CreationTimestamp.Compare(o.gw.CreationTimestamp.Time), cmp.Compare(claimKey(g), claimKey(o))) < 0 {
			keep, drop = g, o
		}
		byAddr[g.address] = keep
		drop.address = netip.Addr{}
	}
}

// GatewayClaimKey is the key of a Gateway's claim on the load-balancer
// address pools (lbipam.Claim).
func GatewayClaimKey(nn types.NamespacedName) string { return "gateway:" + nn.String() }

// IngressClaimKey is the key of the claim of the Ingresses of an address
// key (OwnedIngress.Key) on the load-balancer address pools.
func IngressClaimKey(key types.NamespacedName) string { return "ingress:" + key.String() }

// checkListeners validates a Gateway's listeners: protocol, route kinds,
// certificates and conflicts between listeners on the same port.
func (b *builder) checkListeners(g *gateway) {
	gen := g.gw.Generation
	for _, spec := range g.gw.Spec.Listeners {
		l := &listener{spec: spec, valid: true, attachable: true}
		g.listeners = append(g.listeners, l)
		accepted := condition(gwv1.ListenerConditionAccepted, true, gwv1.ListenerReasonAccepted, "Listener accepted", gen)
		resolved := condition(gwv1.ListenerConditionResolvedRefs, true, gwv1.ListenerReasonResolvedRefs, "References resolved", gen)
		kinds := []gwv1.Kind{kindHTTPRoute, kindGRPCRoute}
		switch spec.Protocol {
		case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		case gwv1.TLSProtocolType:
			kinds = []gwv1.Kind{kindTLSRoute}
			if spec.TLS == nil {
				accepted = condition(gwv1.ListenerConditionAccepted, false, gwv1.ListenerReasonUnsupportedProtocol,
					"protocol TLS needs tls (mode Passthrough, or Terminate with certificateRefs)", gen)
				l.valid, l.attachable = false, false
			}
		case gwv1.TCPProtocolType:
			kinds = []gwv1.Kind{kindTCPRoute}
		case gwv1.UDPProtocolType:
			kinds = []gwv1.Kind{kindUDPRoute}
		default:
			accepted = condition(gwv1.ListenerConditionAccepted, false, gwv1.ListenerReasonUnsupportedProtocol,
				fmt.Sprintf("protocol %s is not supported (HTTP, HTTPS, TLS passthrough, TCP and UDP are)", spec.Protocol), gen)
			l.valid, l.attachable = false, false
		}
		// Route kinds: those the protocol serves.
		var invalidKinds []string
		if spec.AllowedRoutes != nil && len(spec.AllowedRoutes.Kinds) > 0 {
			for _, k := range spec.AllowedRoutes.Kinds {
				if (k.Group == nil || *k.Group == gatewayGroup) && slices.Contains(kinds, k.Kind) {
					l.supportedKinds = append(l.supportedKinds, gwv1.RouteGroupKind{Group: ptr(gwv1.Group(gatewayGroup)), Kind: k.Kind})
				} else {
					invalidKinds = append(invalidKinds, string(k.Kind))
				}
			}
		} else if l.valid {
			for _, k := range kinds {
				l.supportedKinds = append(l.supportedKinds, gwv1.RouteGroupKind{Group: ptr(gwv1.Group(gatewayGroup)), Kind: k})
			}
		}
		if l.supportedKinds == nil {
			l.supportedKinds = []gwv1.RouteGroupKind{}
		}
		if len(invalidKinds) > 0 {
			resolved = condition(gwv1.ListenerConditionResolvedRefs, false, gwv1.ListenerReasonInvalidRouteKinds,
				fmt.Sprintf("route kinds %s are not supported here (%v are)", strings.Join(invalidKinds, ", "), kinds), gen)
			if len(l.supportedKinds) == 0 {
				l.valid = false
			}
		}
		if terminatesTLS(spec) {
			reason, msg := b.resolveCertificates(g.gw, l)
			if reason == "" && spec.Protocol == gwv1.HTTPSProtocolType {
				// A listener whose clients cannot be checked as asked is
				// not served, so that no client goes unchecked.
				reason, msg = b.resolveClientValidation(g.gw, l)
			}
			if reason != "" {
				resolved = condition(gwv1.ListenerConditionResolvedRefs, false, reason, msg, gen)
				l.valid = false
			}
		}
		l.conditions = []metav1.Condition{accepted, resolved,
			condition(gwv1.ListenerConditionConflicted, false, gwv1.ListenerReasonNoConflicts, "No conflicts", gen)}
	}
	// Conflicts: one protocol per port (but UDP beside a TCP-based one);
	// one listener per (port, hostname).
	for i, l := range g.listeners {
		for j, o := range g.listeners {
			if i == j || l.spec.Port != o.spec.Port || (l.spec.Protocol == gwv1.UDPProtocolType) != (o.spec.Protocol == gwv1.UDPProtocolType) {
				continue
			}
			var reason gwv1.ListenerConditionReason
			switch {
			case l.spec.Protocol != o.spec.Protocol:
				reason = gwv1.ListenerReasonProtocolConflict
			case ptrValue(l.spec.Hostname) == ptrValue(o.spec.Hostname):
				reason = gwv1.ListenerReasonHostnameConflict
			default:
				continue
			}
			l.conditions[2] = condition(gwv1.ListenerConditionConflicted, true, reason,
				fmt.Sprintf("conflicts with listener %s on port %d", o.spec.Name, o.spec.Port), gen)
			l.valid, l.attachable = false, false
			break
		}
	}
}

// terminatesTLS reports whether a listener terminates TLS: HTTPS, and TLS
// with tls.mode Terminate (the default).
func terminatesTLS(l gwv1.Listener) bool {
	switch l.Protocol {
	case gwv1.HTTPSProtocolType:
		return true
	case gwv1.TLSProtocolType:
		return l.TLS != nil && (l.TLS.Mode == nil || *l.TLS.Mode == gwv1.TLSModeTerminate)
	}
	return false
}

// resolveCertificates loads the certificates of a listener that
// terminates TLS; the reason and message say why they do not resolve.
func (b *builder) resolveCertificates(gw *gwv1.Gateway, l *listener) (gwv1.ListenerConditionReason, string) {
	tls := l.spec.TLS
	if tls == nil || len(tls.CertificateRefs) == 0 {
		return gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("%s needs tls.certificateRefs to terminate TLS", l.spec.Protocol)
	}
	if tls.Mode != nil && *tls.Mode != gwv1.TLSModeTerminate {
		return gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("tls.mode %s is not supported on HTTPS (Terminate is)", *tls.Mode)
	}
	for i, ref := range tls.CertificateRefs {
		c, reason, msg := b.tlsCertificate(gw, ref, fmt.Sprintf("tls.certificateRefs[%d]", i))
		if reason != "" {
			return reason, msg
		}
		l.certs = append(l.certs, c)
	}
	return "", ""
}

// tlsCertificate loads the certificate and key of the kubernetes.io/tls
// Secret that gw's field refers to; the reason and message say why it
// does not resolve.
func (b *builder) tlsCertificate(gw *gwv1.Gateway, ref gwv1.SecretObjectReference, field string) (ir.Certificate, gwv1.ListenerConditionReason, string) {
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != kindSecret) {
		return ir.Certificate{}, gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("%s: only core Secrets are supported", field)
	}
	ns := gw.Namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	if ns != gw.Namespace && !b.byName[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}].ingress && !b.granted(gatewayGroup, kindGateway, gw.Namespace, "", kindSecret, ns, string(ref.Name)) {
		return ir.Certificate{}, gwv1.ListenerReasonRefNotPermitted, fmt.Sprintf("%s: Secret %s/%s: no ReferenceGrant in %s allows it", field, ns, ref.Name, ns)
	}
	nn := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
	b.readSecrets[nn] = true
	s, ok := b.secrets[nn]
	if !ok {
		return ir.Certificate{}, gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("%s: Secret %s not found", field, nn)
	}
	chain, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if s.Type != corev1.SecretTypeTLS || !isPEM(chain, "CERTIFICATE") || !isPEM(key, "PRIVATE KEY") {
		return ir.Certificate{}, gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("%s: Secret %s is not a kubernetes.io/tls Secret with a PEM tls.crt and tls.key", field, nn)
	}
	return ir.Certificate{Name: nn.String(), Chain: chain, Key: key}, "", ""
}

// resolveBackendCertificate loads the client certificate gw presents to
// the backends it speaks TLS to (spec.tls.backend.clientCertificateRef).
// When it does not resolve, every listener says why (ResolvedRefs) and
// keeps serving: the backends get no client certificate, and those that
// require one refuse the connection.
func (b *builder) resolveBackendCertificate(g *gateway) {
	t := g.gw.Spec.TLS
	if t == nil || t.Backend == nil || t.Backend.ClientCertificateRef == nil {
		return
	}
	c, reason, msg := b.tlsCertificate(g.gw, *t.Backend.ClientCertificateRef, "spec.tls.backend.clientCertificateRef")
	if reason == "" {
		g.backendCert = &c
		return
	}
	for _, l := range g.listeners {
		if l.conditions[1].Status == metav1.ConditionTrue {
			l.conditions[1] = condition(gwv1.ListenerConditionResolvedRefs, false, reason,
				msg+" (backends get no client certificate)", g.gw.Generation)
		}
	}
}

// granted reports whether a ReferenceGrant in toNS lets objects of
// fromGroup/fromKind in fromNS refer to toGroup/toKind toName.
func (b *builder) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	for _, g := range b.in.ReferenceGrants {
		if g.Namespace != toNS {
			continue
		}
		from := slices.ContainsFunc(g.Spec.From, func(f gwv1beta1.ReferenceGrantFrom) bool {
			return string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gwv1beta1.ReferenceGrantTo) bool {
			return string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || *t.Name == "" || string(*t.Name) == toName)
		})
		if from && to {
			return true
		}
	}
	return false
}

func (b *builder) gatewayStatus(g *gateway) gwv1.GatewayStatus {
	gen := g.gw.Generation
	st := gwv1.GatewayStatus{}
	valid := 0
	for _, l := range g.listeners {
		ls := gwv1.ListenerStatus{Name: l.spec.Name, SupportedKinds: l.supportedKinds, AttachedRoutes: int32(l.attached)}
		ls.Conditions = append(ls.Conditions, l.conditions...)
		switch {
		case !l.valid:
			ls.Conditions = append(ls.Conditions, condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonInvalid, "Listener is invalid", gen))
		case !g.address.IsValid():
			ls.Conditions = append(ls.Conditions, condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonPending, "Waiting for an address", gen))
		default:
			valid++
			ls.Conditions = append(ls.Conditions, condition(gwv1.ListenerConditionProgrammed, true, gwv1.ListenerReasonProgrammed, "Listener programmed", gen))
		}
		st.Listeners = append(st.Listeners, ls)
	}
	switch {
	case g.addrReason == gwv1.GatewayReasonUnsupportedAddress || g.addrReason == gwv1.GatewayReasonInvalid:
		st.Conditions = append(st.Conditions, condition(gwv1.GatewayConditionAccepted, false, g.addrReason, g.addrMsg, gen),
			condition(gwv1.GatewayConditionProgrammed, false, gwv1.GatewayReasonInvalid, "Gateway not accepted", gen))
		return st
	case valid == len(g.listeners) || !g.address.IsValid():
		st.Conditions = append(st.Conditions, condition(gwv1.GatewayConditionAccepted, true, gwv1.GatewayReasonAccepted, withIgnored("Gateway accepted", g.gw), gen))
	default:
		st.Conditions = append(st.Conditions, condition(gwv1.GatewayConditionAccepted, true, gwv1.GatewayReasonListenersNotValid, withIgnored("Some listeners are invalid", g.gw), gen))
	}
	switch {
	case g.addrReason != "":
		st.Conditions = append(st.Conditions, condition(gwv1.GatewayConditionProgrammed, false, g.addrReason, g.addrMsg, gen))
	case g.address.IsValid():
		st.Addresses = []gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: g.address.String()}}
		st.Conditions = append(st.Conditions, condition(gwv1.GatewayConditionProgrammed, true, gwv1.GatewayReasonProgrammed, "Served by the node Envoys", gen))
	default:
		st.Conditions = append(st.Conditions, condition(gwv1.GatewayConditionProgrammed, false, gwv1.GatewayReasonAddressNotAssigned, "No address assigned yet (from a MembraneLoadBalancerIPPool)", gen))
	}
	if c, ok := insecureFrontendCondition(g.gw); ok {
		st.Conditions = append(st.Conditions, c)
	}
	return st
}

// withIgnored adds to msg the fields of gw Membrane does not implement and
// ignores (they change nothing of what is served).
func withIgnored(msg string, gw *gwv1.Gateway) string {
	var ignored []string
	if gw.Spec.Infrastructure != nil {
		ignored = append(ignored, "spec.infrastructure")
	}
	if gw.Spec.AllowedListeners != nil {
		ignored = append(ignored, "spec.allowedListeners")
	}
	if gw.Spec.DefaultScope != "" {
		ignored = append(ignored, "spec.defaultScope")
	}
	for i, l := range gw.Spec.Listeners {
		if l.TLS != nil && len(l.TLS.Options) > 0 {
			ignored = append(ignored, fmt.Sprintf("spec.listeners[%d].tls.options", i))
		}
	}
	if len(ignored) == 0 {
		return msg
	}
	return msg + "; not supported, ignored: " + strings.Join(ignored, ", ")
}

// RequestedAddress is the IPv4 address a Gateway's spec.addresses asks for
// (none when it asks for none, or only for an IPAddress without a value:
// any address). reason and msg say why the request cannot be honoured:
// UnsupportedAddress for a type other than IPAddress, AddressNotUsable for
// a value that is no IPv4 address or for more than one address (a Gateway
// has one).
func RequestedAddress(gw *gwv1.Gateway) (netip.Addr, gwv1.GatewayConditionReason, string) {
	var want netip.Addr
	for i, a := range gw.Spec.Addresses {
		if a.Type != nil && *a.Type != gwv1.IPAddressType {
			return netip.Addr{}, gwv1.GatewayReasonUnsupportedAddress, fmt.Sprintf("spec.addresses[%d]: type %s is not supported (IPAddress is)", i, *a.Type)
		}
	}
	for i, a := range gw.Spec.Addresses {
		if a.Value == "" {
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || !ip.Is4() {
			return netip.Addr{}, gwv1.GatewayReasonAddressNotUsable, fmt.Sprintf("spec.addresses[%d]: %q is not an IPv4 address", i, a.Value)
		}
		if want.IsValid() && want != ip {
			return netip.Addr{}, gwv1.GatewayReasonAddressNotUsable, fmt.Sprintf("spec.addresses[%d]: a Gateway has one address (%s is asked for already)", i, want)
		}
		want = ip
	}
	return want, "", ""
}

func isPEM(b []byte, typeSuffix string) bool {
	s := string(b)
	return strings.Contains(s, "-----BEGIN ") && strings.Contains(s, typeSuffix+"-----")
}

func ptr[T any](v T) *T { return &v }

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

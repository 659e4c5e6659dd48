package v1alpha1

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
)

// maxPortsPerRule is Cilium's limit of ports in one toPorts entry.
const maxPortsPerRule = 40

// Validate checks a rule beyond what the CRD schema can express, and checks
// again what the schema does check, for rules that never went through the API
// server. Errors carry paths rooted at "spec"; see ValidateAt for others.
//
// What it accepts, as Cilium does:
//   - endpointSelector {} selects every endpoint (of the policy's namespace,
//     for a namespaced policy); a missing endpointSelector is an error.
//   - An empty ingress (or egress) rule {} is valid and matches no peer: its
//     only effect is default deny for that direction ("ingress: [{}]" is
//     Cilium's deny-all idiom). An empty ingressDeny/egressDeny rule denies
//     nothing but also turns default deny on. A rule with no sections has no
//     effect.
//   - fromEndpoints/toEndpoints [{}] match every endpoint (of the policy's
//     namespace, for a namespaced policy).
//   - A rule's peer fields (endpoints, entities, CIDRs, FQDNs) are a union;
//     Cilium refuses some combinations (e.g. toFQDNs with toEndpoints),
//     Membrane does not.
//
// What it rejects that the schema lets through: label selectors whose keys
// or values are not Kubernetes label syntax (after an optional "k8s:" or
// "any:" source prefix) or whose operators are wrong; CIDR exceptions outside
// their CIDR; endPort below port, or with a named port or port 0; named ports
// that are not IANA service names; HTTP method, path or host that are not
// RE2 regular expressions; header strings that are not "Name" or
// "Name: value"; L7 rules on port 0, without ports, or HTTP rules on a
// protocol other than TCP; DNS rules on ingress or with port ranges; HTTP and
// DNS rules mixed in one port rule; more than 40 ports in one toPorts entry.
// And what a Rule built in Go may get wrong: unknown entities, protocols,
// modes and mismatch actions, malformed CIDRs, FQDN selectors with both or
// neither of matchName and matchPattern.
func (r *Rule) Validate() field.ErrorList {
	return r.ValidateAt(field.NewPath("spec"))
}

// ValidateAt is Validate with paths rooted at path, e.g. specs[2].
func (r *Rule) ValidateAt(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.EndpointSelector == nil {
		errs = append(errs, field.Required(path.Child("endpointSelector"), "every rule selects endpoints ({} selects all)"))
	} else {
		errs = append(errs, validateSelector(r.EndpointSelector, path.Child("endpointSelector"))...)
	}
	for i := range r.Ingress {
		p := path.Child("ingress").Index(i)
		errs = append(errs, validateIngressPeers(&r.Ingress[i].IngressCommonRule, p)...)
		for j := range r.Ingress[i].ToPorts {
			errs = append(errs, validatePortRule(&r.Ingress[i].ToPorts[j], true, p.Child("toPorts").Index(j))...)
		}
		errs = append(errs, validateAuthentication(r.Ingress[i].Authentication, p.Child("authentication"))...)
	}
	for i := range r.IngressDeny {
		p := path.Child("ingressDeny").Index(i)
		errs = append(errs, validateIngressPeers(&r.IngressDeny[i].IngressCommonRule, p)...)
		for j := range r.IngressDeny[i].ToPorts {
			errs = append(errs, validatePorts(r.IngressDeny[i].ToPorts[j].Ports, p.Child("toPorts").Index(j).Child("ports"))...)
		}
	}
	for i := range r.Egress {
		p := path.Child("egress").Index(i)
		errs = append(errs, validateEgressPeers(&r.Egress[i].EgressCommonRule, p)...)
		for j := range r.Egress[i].ToPorts {
			errs = append(errs, validatePortRule(&r.Egress[i].ToPorts[j], false, p.Child("toPorts").Index(j))...)
		}
		for j := range r.Egress[i].ToFQDNs {
			errs = append(errs, validateFQDN(&r.Egress[i].ToFQDNs[j], p.Child("toFQDNs").Index(j))...)
		}
		errs = append(errs, validateAuthentication(r.Egress[i].Authentication, p.Child("authentication"))...)
	}
	for i := range r.EgressDeny {
		p := path.Child("egressDeny").Index(i)
		errs = append(errs, validateEgressPeers(&r.EgressDeny[i].EgressCommonRule, p)...)
		for j := range r.EgressDeny[i].ToPorts {
			errs = append(errs, validatePorts(r.EgressDeny[i].ToPorts[j].Ports, p.Child("toPorts").Index(j).Child("ports"))...)
		}
	}
	return errs
}

// validateRules validates a policy's spec and specs.
func validateRules(spec *Rule, specs []Rule) field.ErrorList {
	var errs field.ErrorList
	if spec == nil && len(specs) == 0 {
		errs = append(errs, field.Required(field.NewPath("spec"), "a policy needs spec or specs"))
	}
	if spec != nil {
		errs = append(errs, spec.ValidateAt(field.NewPath("spec"))...)
	}
	for i := range specs {
		errs = append(errs, specs[i].ValidateAt(field.NewPath("specs").Index(i))...)
	}
	return errs
}

func validateIngressPeers(c *IngressCommonRule, p *field.Path) field.ErrorList {
	return validatePeers(c.FromEndpoints, c.FromEntities, c.FromCIDR, c.FromCIDRSet,
		p.Child("fromEndpoints"), p.Child("fromEntities"), p.Child("fromCIDR"), p.Child("fromCIDRSet"))
}

func validateEgressPeers(c *EgressCommonRule, p *field.Path) field.ErrorList {
	return validatePeers(c.ToEndpoints, c.ToEntities, c.ToCIDR, c.ToCIDRSet,
		p.Child("toEndpoints"), p.Child("toEntities"), p.Child("toCIDR"), p.Child("toCIDRSet"))
}

func validatePeers(sels []metav1.LabelSelector, ents []Entity, cidrs []CIDR, sets []CIDRRule, selPath, entPath, cidrPath, setPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i := range sels {
		errs = append(errs, validateSelector(&sels[i], selPath.Index(i))...)
	}
	for i, e := range ents {
		if !validEntity(e) {
			errs = append(errs, field.NotSupported(entPath.Index(i), e, entityNames()))
		}
	}
	for i, c := range cidrs {
		if _, err := parseCIDR(c, cidrPath.Index(i)); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range sets {
		errs = append(errs, validateCIDRRule(&sets[i], setPath.Index(i))...)
	}
	return errs
}

// SelectorLabelKey returns a selector key without its source prefix: "app"
// for "k8s:app", "any:app" and "app" (Cilium's label sources; both mean a
// Kubernetes label here). ok is false for another source (e.g. Cilium's
// "reserved:host"), which Membrane does not select on.
func SelectorLabelKey(key string) (k string, ok bool) {
	src, rest, found := strings.Cut(key, ":")
	if !found {
		return key, true
	}
	return rest, src == "k8s" || src == "any"
}

// validateSelector checks label selector syntax after removing the source
// prefixes from its keys.
func validateSelector(sel *metav1.LabelSelector, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	plain := sel.DeepCopy()
	if len(sel.MatchLabels) > 0 {
		plain.MatchLabels = make(map[string]string, len(sel.MatchLabels))
	}
	for k, v := range sel.MatchLabels {
		key, ok := SelectorLabelKey(k)
		if !ok {
			errs = append(errs, field.Invalid(p.Child("matchLabels").Key(k), k, unknownSourceMsg))
		}
		plain.MatchLabels[key] = v
	}
	for i := range plain.MatchExpressions {
		key, ok := SelectorLabelKey(plain.MatchExpressions[i].Key)
		if !ok {
			errs = append(errs, field.Invalid(p.Child("matchExpressions").Index(i).Child("key"), plain.MatchExpressions[i].Key, unknownSourceMsg))
		}
		plain.MatchExpressions[i].Key = key
	}
	serrs := metav1validation.ValidateLabelSelector(plain, metav1validation.LabelSelectorValidationOptions{}, p)
	if len(serrs) == 0 {
		if _, err := metav1.LabelSelectorAsSelector(plain); err != nil {
			serrs = append(serrs, field.Invalid(p, sel, err.Error()))
		}
	}
	return append(errs, serrs...)
}

const unknownSourceMsg = `a label source prefix must be "k8s:" or "any:" (Cilium's reserved labels are selected with fromEntities/toEntities)`

func validEntity(e Entity) bool {
	switch e {
	case EntityAll, EntityWorld, EntityCluster, EntityHost, EntityRemoteNode,
		EntityKubeAPIServer, EntityHealth, EntityInit, EntityUnmanaged:
		return true
	}
	return false
}

func entityNames() []string {
	return []string{
		string(EntityAll), string(EntityWorld), string(EntityCluster), string(EntityHost), string(EntityRemoteNode),
		string(EntityKubeAPIServer), string(EntityHealth), string(EntityInit), string(EntityUnmanaged),
	}
}

// parseCIDR parses a CIDR; host bits may be set (10.1.2.3/8 is 10.0.0.0/8).
func parseCIDR(c CIDR, p *field.Path) (netip.Prefix, *field.Error) {
	pfx, err := netip.ParsePrefix(string(c))
	if err != nil {
		return netip.Prefix{}, field.Invalid(p, string(c), "must be a CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32")
	}
	return pfx.Masked(), nil
}

func validateCIDRRule(r *CIDRRule, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	outer, err := parseCIDR(r.CIDR, p.Child("cidr"))
	if err != nil {
		errs = append(errs, err)
	}
	for i, e := range r.ExceptCIDRs {
		inner, err := parseCIDR(e, p.Child("except").Index(i))
		switch {
		case err != nil:
			errs = append(errs, err)
		case outer.IsValid() && (inner.Addr().Is4() != outer.Addr().Is4() || inner.Bits() < outer.Bits() || !outer.Contains(inner.Addr())):
			errs = append(errs, field.Invalid(p.Child("except").Index(i), string(e), fmt.Sprintf("must lie within cidr %s", r.CIDR)))
		}
	}
	return errs
}

// portNumber returns a numeric port's value; named is true for a port name.
func portNumber(port string) (n int, named bool) {
	if port != "" && strings.Trim(port, "0123456789") == "" {
		v, err := strconv.Atoi(port)
		if err != nil || v > 65535 {
			return -1, false
		}
		return v, false
	}
	return 0, true
}

// validatePorts checks ports and returns errors; see validatePortRule for L7.
func validatePorts(ports []PortProtocol, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(ports) > maxPortsPerRule {
		errs = append(errs, field.TooMany(p, len(ports), maxPortsPerRule))
	}
	for i := range ports {
		errs = append(errs, validatePort(&ports[i], p.Index(i))...)
	}
	return errs
}

func validatePort(pp *PortProtocol, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	n, named := portNumber(pp.Port)
	switch {
	case pp.Port == "":
		errs = append(errs, field.Required(p.Child("port"), "a port number (0 for every port) or name"))
	case n < 0:
		errs = append(errs, field.Invalid(p.Child("port"), pp.Port, "must be a port number from 0 to 65535 or a port name"))
	case named:
		for _, msg := range validation.IsValidPortName(strings.ToLower(pp.Port)) {
			errs = append(errs, field.Invalid(p.Child("port"), pp.Port, msg))
		}
	}
	switch {
	case pp.EndPort == 0:
	case pp.EndPort < 0 || pp.EndPort > 65535:
		errs = append(errs, field.Invalid(p.Child("endPort"), pp.EndPort, "must be from 0 to 65535"))
	case named:
		errs = append(errs, field.Invalid(p.Child("endPort"), pp.EndPort, "a port range needs a numeric port, not a port name"))
	case n == 0:
		errs = append(errs, field.Invalid(p.Child("endPort"), pp.EndPort, "a port range needs a port other than 0 (which means every port)"))
	case n > 0 && int(pp.EndPort) < n:
		errs = append(errs, field.Invalid(p.Child("endPort"), pp.EndPort, fmt.Sprintf("must be greater than or equal to port (%d)", n)))
	}
	switch pp.Protocol {
	case "", ProtoTCP, ProtoUDP, ProtoSCTP, ProtoAny:
	default:
		errs = append(errs, field.NotSupported(p.Child("protocol"), pp.Protocol, []string{string(ProtoTCP), string(ProtoUDP), string(ProtoSCTP), string(ProtoAny)}))
	}
	return errs
}

func validatePortRule(pr *PortRule, ingress bool, p *field.Path) field.ErrorList {
	errs := validatePorts(pr.Ports, p.Child("ports"))
	l7 := pr.Rules
	if l7 == nil || (l7.HTTP == nil && l7.DNS == nil) {
		return errs
	}
	rp := p.Child("rules")
	if l7.HTTP != nil && l7.DNS != nil {
		errs = append(errs, field.Forbidden(rp.Child("dns"), "http and dns rules cannot be combined in one port rule"))
	}
	if ingress && l7.DNS != nil {
		errs = append(errs, field.Forbidden(rp.Child("dns"), "dns rules apply to egress only"))
	}
	if len(pr.Ports) == 0 {
		errs = append(errs, field.Required(p.Child("ports"), "L7 rules need the ports they apply to"))
	}
	for i, pp := range pr.Ports {
		pth := p.Child("ports").Index(i)
		if n, named := portNumber(pp.Port); !named && n == 0 {
			errs = append(errs, field.Invalid(pth.Child("port"), pp.Port, "L7 rules need a specific port, not 0"))
		}
		if l7.HTTP != nil && pp.Protocol != ProtoTCP {
			errs = append(errs, field.Invalid(pth.Child("protocol"), pp.Protocol, "http rules need protocol TCP"))
		}
		if l7.DNS != nil && pp.EndPort != 0 {
			errs = append(errs, field.Invalid(pth.Child("endPort"), pp.EndPort, "dns rules do not support port ranges"))
		}
		if l7.DNS != nil && pp.Protocol == ProtoSCTP {
			errs = append(errs, field.Invalid(pth.Child("protocol"), pp.Protocol, "dns rules need protocol UDP, TCP or ANY"))
		}
	}
	for i := range l7.HTTP {
		errs = append(errs, validateHTTP(&l7.HTTP[i], rp.Child("http").Index(i))...)
	}
	for i := range l7.DNS {
		errs = append(errs, validateFQDN(&l7.DNS[i], rp.Child("dns").Index(i))...)
	}
	return errs
}

func validateHTTP(h *PortRuleHTTP, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct{ name, re string }{{"method", h.Method}, {"path", h.Path}, {"host", h.Host}} {
		if _, err := regexp.Compile(f.re); err != nil {
			errs = append(errs, field.Invalid(p.Child(f.name), f.re, "must be a regular expression (RE2 syntax): "+err.Error()))
		}
	}
	for i, s := range h.Headers {
		if _, _, err := ParseHeader(s); err != nil {
			errs = append(errs, field.Invalid(p.Child("headers").Index(i), s, err.Error()))
		}
	}
	for i, m := range h.HeaderMatches {
		mp := p.Child("headerMatches").Index(i)
		if !validHeaderName(m.Name) {
			errs = append(errs, field.Invalid(mp.Child("name"), m.Name, headerNameMsg))
		}
		if !validHeaderValue(m.Value) {
			errs = append(errs, field.Invalid(mp.Child("value"), m.Value, headerValueMsg))
		}
		switch m.Mismatch {
		case "", MismatchLog, MismatchAdd, MismatchDelete, MismatchReplace:
		default:
			errs = append(errs, field.NotSupported(mp.Child("mismatch"), m.Mismatch, []string{string(MismatchLog), string(MismatchAdd), string(MismatchDelete), string(MismatchReplace)}))
		}
	}
	return errs
}

const (
	headerNameMsg  = "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
	headerValueMsg = "must not contain control characters"
)

// ParseHeader reads an entry of an HTTP rule's headers: "Name" requires the
// header; "Name: value" (or Cilium's "Name value") requires it with exactly
// that value. An empty value requires only presence.
func ParseHeader(s string) (name, value string, err error) {
	name, value = s, ""
	if i := strings.IndexAny(s, ": "); i >= 0 {
		name = s[:i]
		value = strings.TrimSpace(strings.TrimPrefix(strings.TrimLeft(s[i:], " "), ":"))
	}
	if !validHeaderName(name) {
		return "", "", fmt.Errorf(`must be "Name" or "Name: value": the name %s`, headerNameMsg)
	}
	if !validHeaderValue(value) {
		return "", "", fmt.Errorf("the value %s", headerValueMsg)
	}
	return name, value, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s has no control characters but tab.
func validHeaderValue(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func validateFQDN(s *FQDNSelector, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case s.MatchName == "" && s.MatchPattern == "":
		errs = append(errs, field.Required(p, "one of matchName and matchPattern"))
	case s.MatchName != "" && s.MatchPattern != "":
		errs = append(errs, field.Forbidden(p.Child("matchPattern"), "only one of matchName and matchPattern may be set"))
	}
	if s.MatchName != "" {
		if err := matchpattern.ValidateName(s.MatchName); err != nil {
			errs = append(errs, field.Invalid(p.Child("matchName"), s.MatchName, err.Error()))
		}
	}
	if s.MatchPattern != "" {
		if err := matchpattern.ValidatePattern(s.MatchPattern); err != nil {
			errs = append(errs, field.Invalid(p.Child("matchPattern"), s.MatchPattern, err.Error()))
		}
	}
	return errs
}

func validateAuthentication(a *Authentication, p *field.Path) field.ErrorList {
	if a == nil {
		return nil
	}
	switch a.Mode {
	case AuthenticationDisabled, AuthenticationRequired, AuthenticationAlwaysFail:
		return nil
	case "":
		return field.ErrorList{field.Required(p.Child("mode"), "")}
	}
	return field.ErrorList{field.NotSupported(p.Child("mode"), a.Mode, []string{string(AuthenticationDisabled), string(AuthenticationRequired), string(AuthenticationAlwaysFail)})}
}

// Package convert turns Kubernetes policy objects — MembraneNetworkPolicy,
// MembraneClusterwideNetworkPolicy (membrane.io/v1alpha1, CiliumNetworkPolicy
// field names) and networking.k8s.io/v1 NetworkPolicy — into mesh/policy's
// plain Policy. It is the only part of policy resolution that knows
// Kubernetes types (and never client-go).
//
// A policy with errors must not be used as converted (the zero Policy is
// returned): the errors become its Valid=False condition and the agent
// keeps the policy's last valid version.
package convert

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// Kinds, as policy.Policy.Kind.
const (
	KindMembraneNetworkPolicy            = "MembraneNetworkPolicy"
	KindMembraneClusterwideNetworkPolicy = "MembraneClusterwideNetworkPolicy"
	KindNetworkPolicy                    = "NetworkPolicy"
)

// FromMembrane converts one rule after validating it (v1alpha1's
// Rule.Validate, paths under "spec"). Selectors are not scoped here: the
// resolver scopes them by the Policy's namespace.
//
// Cilium's implicit peers become explicit: a rule with toPorts but no peer
// field matches every peer (Entities [all]); a rule with neither matches no
// peer. Authentication modes required and test-always-fail set
// AuthRequired.
func FromMembrane(r *v1alpha1.Rule) (policy.Rule, field.ErrorList) {
	if errs := r.Validate(); len(errs) > 0 {
		return policy.Rule{}, errs
	}
	return membraneRule(r, field.NewPath("spec"))
}

// FromMembranePolicy converts a MembraneNetworkPolicy (spec, then specs).
func FromMembranePolicy(p *v1alpha1.MembraneNetworkPolicy) (policy.Policy, field.ErrorList) {
	errs := p.Validate()
	if p.Namespace == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "namespace"), "a MembraneNetworkPolicy is namespaced"))
	}
	if len(errs) > 0 {
		return policy.Policy{}, errs
	}
	return membranePolicy(KindMembraneNetworkPolicy, p.Namespace, p.Name, p.Spec, p.Specs)
}

// FromMembraneClusterwidePolicy converts a MembraneClusterwideNetworkPolicy.
func FromMembraneClusterwidePolicy(p *v1alpha1.MembraneClusterwideNetworkPolicy) (policy.Policy, field.ErrorList) {
	if errs := p.Validate(); len(errs) > 0 {
		return policy.Policy{}, errs
	}
	return membranePolicy(KindMembraneClusterwideNetworkPolicy, "", p.Name, p.Spec, p.Specs)
}

// Reuse is a valid conversion's rules with what they were converted from:
// the next version of the same object validates and converts again only
// the rules that differ. The zero Reuse reuses nothing.
type Reuse struct {
	spec  *v1alpha1.Rule
	specs []v1alpha1.Rule
	rules []policy.Rule // spec's (if any), then specs'
}

// FromMembranePolicyReusing is FromMembranePolicy, except that a rule
// equal to prev's rule in the same place (spec, or specs[i]) is taken as
// prev converted it: not validated or converted again (both depend on the
// rule and its place only), and the very same policy.Rule, so that
// comparing it with the last one costs nothing. It returns what the next
// version can reuse: this conversion, or prev where this version is
// invalid. The objects given must not be modified afterwards (an
// informer's never are).
func FromMembranePolicyReusing(p *v1alpha1.MembraneNetworkPolicy, prev Reuse) (policy.Policy, Reuse, field.ErrorList) {
	var errs field.ErrorList
	if p.Namespace == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "namespace"), "a MembraneNetworkPolicy is namespaced"))
	}
	return reusing(KindMembraneNetworkPolicy, p.Namespace, p.Name, p.Spec, p.Specs, prev, errs)
}

// FromMembraneClusterwidePolicyReusing is FromMembraneClusterwidePolicy
// as FromMembranePolicyReusing is FromMembranePolicy.
func FromMembraneClusterwidePolicyReusing(p *v1alpha1.MembraneClusterwideNetworkPolicy, prev Reuse) (policy.Policy, Reuse, field.ErrorList) {
	return reusing(KindMembraneClusterwideNetworkPolicy, "", p.Name, p.Spec, p.Specs, prev, nil)
}

// reusing is membranePolicy after validation, with prev's rules reused;
// objectErrs are the object's own errors (reported after the rules', as
// by FromMembranePolicy).
func reusing(kind, namespace, name string, spec *v1alpha1.Rule, specs []v1alpha1.Rule, prev Reuse, objectErrs field.ErrorList) (policy.Policy, Reuse, field.ErrorList) {
	type place struct {
		rule *v1alpha1.Rule
		path *field.Path
		// conv is prev's conversion of the same rule in the same place.
		conv *policy.Rule
	}
	prevSpecs := prev.rules
	if prev.spec != nil {
		prevSpecs = prev.rules[1:]
	}
	var places []place
	if spec != nil {
		pl := place{rule: spec, path: field.NewPath("spec")}
		if prev.spec != nil && reflect.DeepEqual(spec, prev.spec) {
			pl.conv = &prev.rules[0]
		}
		places = append(places, pl)
	}
	for i := range specs {
		pl := place{rule: &specs[i], path: field.NewPath("specs").Index(i)}
		if i < len(prev.specs) && reflect.DeepEqual(&specs[i], &prev.specs[i]) {
			pl.conv = &prevSpecs[i]
		}
		places = append(places, pl)
	}
	var errs field.ErrorList
	if len(places) == 0 {
		errs = append(errs, field.Required(field.NewPath("spec"), "a policy needs spec or specs"))
	}
	for _, pl := range places {
		if pl.conv == nil {
			errs = append(errs, pl.rule.ValidateAt(pl.path)...)
		}
	}
	errs = append(errs, objectErrs...)
	if len(errs) > 0 {
		return policy.Policy{}, prev, errs
	}
	out := policy.Policy{Kind: kind, Namespace: namespace, Name: name}
	for _, pl := range places {
		if pl.conv != nil {
			out.Rules = append(out.Rules, *pl.conv)
			continue
		}
		rule, e := membraneRule(pl.rule, pl.path)
		errs = append(errs, e...)
		out.Rules = append(out.Rules, rule)
	}
	if len(errs) > 0 {
		return policy.Policy{}, prev, errs
	}
	return out, Reuse{spec: spec, specs: specs, rules: out.Rules}, nil
}

func membranePolicy(kind, namespace, name string, spec *v1alpha1.Rule, specs []v1alpha1.Rule) (policy.Policy, field.ErrorList) {
	out := policy.Policy{Kind: kind, Namespace: namespace, Name: name}
	var errs field.ErrorList
	add := func(r *v1alpha1.Rule, p *field.Path) {
		rule, e := membraneRule(r, p)
		errs = append(errs, e...)
		out.Rules = append(out.Rules, rule)
	}
	if spec != nil {
		add(spec, field.NewPath("spec"))
	}
	for i := range specs {
		add(&specs[i], field.NewPath("specs").Index(i))
	}
	if len(errs) > 0 {
		return policy.Policy{}, errs
	}
	return out, nil
}

// membraneRule converts a validated rule; errors are only what validation
// would have caught.
func membraneRule(r *v1alpha1.Rule, path *field.Path) (policy.Rule, field.ErrorList) {
	var errs field.ErrorList
	out := policy.Rule{EndpointSelector: selector(r.EndpointSelector, "")}
	for i := range r.Ingress {
		in := &r.Ingress[i]
		p := path.Child("ingress").Index(i)
		pr, e := peers(in.FromEndpoints, in.FromEntities, in.FromCIDR, in.FromCIDRSet, nil, p, "from")
		errs = append(errs, e...)
		pr.ToPorts, e = portRules(in.ToPorts, p.Child("toPorts"))
		errs = append(errs, e...)
		pr.AuthRequired = authRequired(in.Authentication)
		pr.AuthAlwaysFail = in.Authentication != nil && in.Authentication.Mode == v1alpha1.AuthenticationAlwaysFail
		out.Ingress = append(out.Ingress, implicitPeers(pr))
	}
	for i := range r.IngressDeny {
		in := &r.IngressDeny[i]
		p := path.Child("ingressDeny").Index(i)
		pr, e := peers(in.FromEndpoints, in.FromEntities, in.FromCIDR, in.FromCIDRSet, nil, p, "from")
		errs = append(errs, e...)
		pr.ToPorts, e = denyPortRules(in.ToPorts, p.Child("toPorts"))
		errs = append(errs, e...)
		out.IngressDeny = append(out.IngressDeny, implicitPeers(pr))
	}
	for i := range r.Egress {
		eg := &r.Egress[i]
		p := path.Child("egress").Index(i)
		pr, e := peers(eg.ToEndpoints, eg.ToEntities, eg.ToCIDR, eg.ToCIDRSet, eg.ToFQDNs, p, "to")
		errs = append(errs, e...)
		pr.ToPorts, e = portRules(eg.ToPorts, p.Child("toPorts"))
		errs = append(errs, e...)
		pr.AuthRequired = authRequired(eg.Authentication)
		pr.AuthAlwaysFail = eg.Authentication != nil && eg.Authentication.Mode == v1alpha1.AuthenticationAlwaysFail
		out.Egress = append(out.Egress, implicitPeers(pr))
	}
	for i := range r.EgressDeny {
		eg := &r.EgressDeny[i]
		p := path.Child("egressDeny").Index(i)
		pr, e := peers(eg.ToEndpoints, eg.ToEntities, eg.ToCIDR, eg.ToCIDRSet, nil, p, "to")
		errs = append(errs, e...)
		pr.ToPorts, e = denyPortRules(eg.ToPorts, p.Child("toPorts"))
		errs = append(errs, e...)
		out.EgressDeny = append(out.EgressDeny, implicitPeers(pr))
	}
	return out, errs
}

// implicitPeers makes Cilium's L4-only rule explicit: toPorts without any
// peer field matches every peer.
func implicitPeers(pr policy.PeerRule) policy.PeerRule {
	if len(pr.Endpoints)+len(pr.Entities)+len(pr.CIDRs)+len(pr.FQDNs) == 0 && len(pr.ToPorts) > 0 {
		pr.Entities = []policy.Entity{policy.EntityAll}
	}
	return pr
}

func peers(eps []metav1.LabelSelector, ents []v1alpha1.Entity, cidrs []v1alpha1.CIDR, sets []v1alpha1.CIDRRule,
	fqdns []v1alpha1.FQDNSelector, p *field.Path, dir string) (policy.PeerRule, field.ErrorList) {
	var out policy.PeerRule
	var errs field.ErrorList
	for i := range eps {
		out.Endpoints = append(out.Endpoints, selector(&eps[i], ""))
	}
	for _, e := range ents {
		out.Entities = append(out.Entities, policy.Entity(e))
	}
	for i, c := range cidrs {
		pfx, err := parsePrefix(string(c), p.Child(dir+"CIDR").Index(i))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.CIDRs = append(out.CIDRs, policy.CIDRRule{CIDR: pfx})
	}
	for i, s := range sets {
		sp := p.Child(dir + "CIDRSet").Index(i)
		rule, e := cidrRule(string(s.CIDR), cidrStrings(s.ExceptCIDRs), sp.Child("cidr"), sp.Child("except"))
		if len(e) > 0 {
			errs = append(errs, e...)
			continue
		}
		out.CIDRs = append(out.CIDRs, rule)
	}
	for _, f := range fqdns {
		out.FQDNs = append(out.FQDNs, policy.FQDN{MatchName: f.MatchName, MatchPattern: f.MatchPattern})
	}
	return out, errs
}

func cidrStrings(cs []v1alpha1.CIDR) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

// parsePrefix parses a CIDR; host bits may be set (10.1.2.3/8 is 10/8).
func parsePrefix(s string, p *field.Path) (netip.Prefix, *field.Error) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, field.Invalid(p, s, "must be a CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32")
	}
	return pfx.Masked(), nil
}

// cidrRule parses a CIDR with exceptions that must lie within it.
func cidrRule(cidr string, except []string, cidrPath, exceptPath *field.Path) (policy.CIDRRule, field.ErrorList) {
	var errs field.ErrorList
	outer, err := parsePrefix(cidr, cidrPath)
	if err != nil {
		return policy.CIDRRule{}, field.ErrorList{err}
	}
	out := policy.CIDRRule{CIDR: outer}
	for i, e := range except {
		inner, err := parsePrefix(e, exceptPath.Index(i))
		switch {
		case err != nil:
			errs = append(errs, err)
		case inner.Addr().BitLen() != outer.Addr().BitLen() || inner.Bits() < outer.Bits() || !outer.Contains(inner.Addr()):
			errs = append(errs, field.Invalid(exceptPath.Index(i), e, "must lie within "+cidr))
		default:
			out.Except = append(out.Except, inner)
		}
	}
	return out, errs
}

func portRules(prs []v1alpha1.PortRule, p *field.Path) ([]policy.PortRule, field.ErrorList) {
	var out []policy.PortRule
	var errs field.ErrorList
	for i := range prs {
		pr := &prs[i]
		ports, e := ports(pr.Ports, p.Index(i).Child("ports"))
		errs = append(errs, e...)
		r := policy.PortRule{Ports: ports}
		if pr.Rules != nil {
			for j, h := range pr.Rules.HTTP {
				rule, e := httpRule(h, p.Index(i).Child("rules", "http").Index(j))
				errs = append(errs, e...)
				r.HTTP = append(r.HTTP, rule)
			}
			for _, d := range pr.Rules.DNS {
				r.DNS = append(r.DNS, policy.FQDN{MatchName: d.MatchName, MatchPattern: d.MatchPattern})
			}
		}
		out = append(out, r)
	}
	return out, errs
}

func denyPortRules(prs []v1alpha1.PortDenyRule, p *field.Path) ([]policy.PortRule, field.ErrorList) {
	var out []policy.PortRule
	var errs field.ErrorList
	for i := range prs {
		ports, e := ports(prs[i].Ports, p.Index(i).Child("ports"))
		errs = append(errs, e...)
		out = append(out, policy.PortRule{Ports: ports})
	}
	return out, errs
}

func ports(pps []v1alpha1.PortProtocol, p *field.Path) ([]policy.Port, field.ErrorList) {
	var out []policy.Port
	var errs field.ErrorList
	for i, pp := range pps {
		proto, err := model.ParseIPProtocol(string(pp.Protocol))
		if err != nil || proto == policy.ICMP {
			errs = append(errs, field.NotSupported(p.Index(i).Child("protocol"), pp.Protocol, []string{"TCP", "UDP", "SCTP", "ANY"}))
			continue
		}
		port := policy.Port{Proto: proto, EndPort: uint16(max(0, min(pp.EndPort, 65535)))}
		switch n, err := strconv.ParseUint(pp.Port, 10, 16); {
		case err == nil:
			port.Port = uint16(n)
		case pp.Port == "" || strings.Trim(pp.Port, "0123456789") == "":
			errs = append(errs, field.Invalid(p.Index(i).Child("port"), pp.Port, "must be a port number from 0 to 65535 or a port name"))
			continue
		default:
			port.Name = pp.Port
		}
		out = append(out, port)
	}
	return out, errs
}

func httpRule(h v1alpha1.PortRuleHTTP, p *field.Path) (policy.HTTPRule, field.ErrorList) {
	var errs field.ErrorList
	out := policy.HTTPRule{Method: h.Method, Path: h.Path, Host: h.Host}
	for i, s := range h.Headers {
		name, value, err := v1alpha1.ParseHeader(s)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("headers").Index(i), s, err.Error()))
			continue
		}
		out.Headers = append(out.Headers, policy.HeaderMatch{Name: name, Value: value})
	}
	for _, m := range h.HeaderMatches {
		out.Headers = append(out.Headers, policy.HeaderMatch{Name: m.Name, Value: m.Value, Mismatch: string(m.Mismatch)})
	}
	return out, errs
}

func authRequired(a *v1alpha1.Authentication) bool {
	return a != nil && (a.Mode == v1alpha1.AuthenticationRequired || a.Mode == v1alpha1.AuthenticationAlwaysFail)
}

// selector copies a label selector, prefixing its keys (after any source
// prefix the key already has, when prefix is empty).
func selector(ls *metav1.LabelSelector, prefix string) policy.Selector {
	var out policy.Selector
	if ls == nil {
		return out
	}
	for k, v := range ls.MatchLabels {
		if out.MatchLabels == nil {
			out.MatchLabels = map[string]string{}
		}
		out.MatchLabels[prefix+k] = v
	}
	for _, e := range ls.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{
			Key: prefix + e.Key, Operator: policy.Operator(e.Operator), Values: append([]string(nil), e.Values...),
		})
	}
	return out
}

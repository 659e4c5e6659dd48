package operator

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// unsupportedFields lists the fields of a policy's rules that the CRD
// accepts (they are CiliumNetworkPolicy's) but Membrane does not implement
// yet, each with what happens to the traffic instead. Paths are rooted like
// the Valid condition's: spec.… and specs[i].….
//
// The agents enforce such rules as described (it is the datapath's
// behaviour, not a guess): authentication.mode required on an egress rule
// drops the traffic the rule matches (drop reason "Authentication
// required"); header mismatch actions let the request through unchanged.
// toFQDNs and DNS rules are implemented (the agents' DNS proxy).
// authentication.mode required on an ingress rule is mutual TLS between
// the node proxies, HTTP rules of the same port included (the destination
// proxy applies them inside the tunnel), where the agents hold SPIFFE
// identities (mutualAuth; without, it drops too); test-always-fail is not
// listed: never authenticating is what it asks for.
func unsupportedFields(spec *v1alpha1.Rule, specs []v1alpha1.Rule, mutualAuth bool) []string {
	var out []string
	if spec != nil {
		out = append(out, unsupportedInRule(spec, field.NewPath("spec"), mutualAuth)...)
	}
	for i := range specs {
		out = append(out, unsupportedInRule(&specs[i], field.NewPath("specs").Index(i), mutualAuth)...)
	}
	return out
}

func unsupportedInRule(r *v1alpha1.Rule, path *field.Path, mutualAuth bool) []string {
	var out []string
	for i := range r.Ingress {
		p := path.Child("ingress").Index(i)
		if !mutualAuth {
			out = append(out, unsupportedAuthentication(r.Ingress[i].Authentication, p.Child("authentication"), "")...)
		}
		out = append(out, unsupportedInPorts(r.Ingress[i].ToPorts, p.Child("toPorts"))...)
	}
	for i := range r.Egress {
		p := path.Child("egress").Index(i)
		out = append(out, unsupportedAuthentication(r.Egress[i].Authentication, p.Child("authentication"),
			"on an egress rule (only ingress rules can require it)")...)
		out = append(out, unsupportedInPorts(r.Egress[i].ToPorts, p.Child("toPorts"))...)
	}
	return out
}

func unsupportedAuthentication(a *v1alpha1.Authentication, p *field.Path, where string) []string {
	if a == nil || a.Mode != v1alpha1.AuthenticationRequired {
		return nil
	}
	const drop = `so traffic matching this rule is dropped (drop reason "Authentication required"), even where another rule allows it`
	if where == "" {
		// The cluster runs without SPIFFE identities.
		return []string{p.String() + `: mode "required": mutual authentication is not available yet, ` + drop}
	}
	return []string{p.String() + `: mode "required" ` + where + `: mutual authentication is not available there, ` + drop}
}

func unsupportedInPorts(prs []v1alpha1.PortRule, path *field.Path) []string {
	var out []string
	for i := range prs {
		rules := prs[i].Rules
		if rules == nil {
			continue
		}
		p := path.Index(i).Child("rules")
		for j, h := range rules.HTTP {
			for k, m := range h.HeaderMatches {
				if m.Mismatch == "" {
					continue
				}
				mp := p.Child("http").Index(j).Child("headerMatches").Index(k).Child("mismatch")
				out = append(out, fmt.Sprintf("%s: %q is not implemented yet: %s", mp, m.Mismatch, mismatchEffect(m.Mismatch)))
			}
		}
	}
	return out
}

// mismatchEffect is what the node proxy does instead of a mismatch action.
func mismatchEffect(a v1alpha1.MismatchAction) string {
	if a == v1alpha1.MismatchLog {
		return "a request whose header does not match is allowed, and the mismatch is not logged"
	}
	return "a request whose header does not match is allowed with the header unchanged"
}

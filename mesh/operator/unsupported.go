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
// behaviour, not a guess): header mismatch actions let the request through
// unchanged. toFQDNs and DNS rules are implemented (the agents' DNS
// proxy). authentication.mode required is mutual TLS between the node
// proxies where the agents hold SPIFFE identities (mutualAuth; without, it
// drops the traffic the rule matches, drop reason "Authentication
// required"): on an ingress rule, HTTP rules of the same port included
// (the destination proxy applies them inside the tunnel); on an egress
// rule, for TCP connections to pods, the rest being dropped.
// test-always-fail is not listed: never authenticating is what it asks
// for.
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
		if !mutualAuth {
			out = append(out, unsupportedAuthentication(r.Egress[i].Authentication, p.Child("authentication"), "")...)
		} else {
			out = append(out, unsupportedEgressAuthentication(&r.Egress[i], p.Child("authentication"))...)
		}
		out = append(out, unsupportedInPorts(r.Egress[i].ToPorts, p.Child("toPorts"))...)
	}
	return out
}

// unsupportedEgressAuthentication: an egress rule requiring authentication
// sends its TCP connections to pods through the authenticated tunnel; the
// rest of what it matches cannot be authenticated and is dropped.
func unsupportedEgressAuthentication(e *v1alpha1.EgressRule, p *field.Path) []string {
	if e.Authentication == nil || e.Authentication.Mode != v1alpha1.AuthenticationRequired {
		return nil
	}
	const drop = `is dropped (drop reason "Authentication required")`
	prefix := p.String() + `: mode "required" authenticates TCP connections to pods (toEndpoints) only: `
	var out []string
	if len(e.ToEndpoints) == 0 || len(e.ToEntities)+len(e.ToCIDR)+len(e.ToCIDRSet)+len(e.ToFQDNs) > 0 {
		out = append(out, prefix+"traffic this rule matches to other peers (toEntities, toCIDR, toCIDRSet, toFQDNs, or every peer without toEndpoints) "+drop)
	}
	if !tcpPorts(e.ToPorts) {
		out = append(out, prefix+"traffic this rule matches of other protocols (UDP and SCTP; every protocol, TCP included, without toPorts or on port 0 of protocol ANY) "+drop)
	}
	if withHTTP(e.ToPorts) {
		out = append(out, p.String()+`: mode "required" with HTTP rules on the rule's ports: the two do not compose on the sending side, so traffic matching this rule `+drop)
	}
	return out
}

// tcpPorts reports whether prs names TCP ports only.
func tcpPorts(prs []v1alpha1.PortRule) bool {
	if len(prs) == 0 {
		return false
	}
	for _, pr := range prs {
		if len(pr.Ports) == 0 {
			return false
		}
		for _, pp := range pr.Ports {
			if pp.Protocol != v1alpha1.ProtoTCP {
				return false
			}
		}
	}
	return true
}

// withHTTP reports whether some port of prs has HTTP rules.
func withHTTP(prs []v1alpha1.PortRule) bool {
	for _, pr := range prs {
		if pr.Rules != nil && len(pr.Rules.HTTP) > 0 {
			return true
		}
	}
	return false
}

func unsupportedAuthentication(a *v1alpha1.Authentication, p *field.Path, where string) []string {
	if a == nil || a.Mode != v1alpha1.AuthenticationRequired {
		return nil
	}
	const drop = `so traffic matching this rule is dropped (drop reason "Authentication required"), even where another rule allows it`
	if where == "" {
		// The cluster runs without SPIFFE identities.
		return []string{p.String() + `: mode "required": mutual authentication is off in this cluster (authentication.mutual.enabled), ` + drop}
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

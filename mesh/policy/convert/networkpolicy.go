package convert

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// FromNetworkPolicy converts a networking.k8s.io/v1 NetworkPolicy into one
// rule, with Kubernetes' semantics:
//   - podSelector selects the policy's namespace's pods (keys get the "k8s:"
//     source);
//   - policyTypes says which directions the policy isolates; omitted, it is
//     Ingress, plus Egress when there are egress rules. An isolated
//     direction without rules allows nothing (an empty Membrane rule);
//     rules of a direction not listed are ignored, as the API server does;
//   - a rule without from/to matches every peer, without ports every port;
//   - a peer's podSelector alone selects pods of the policy's namespace
//     (the resolver's scoping), namespaceSelector selects by the
//     namespace's labels (keys io.cilium.k8s.namespace.labels.…, as
//     identity.ForPod makes them; kubernetes.io/metadata.name is set on
//     every namespace), both together select pods by both, and
//     namespaceSelector {} every namespace; namespace selectors never match
//     reserved identities;
//   - ipBlock is a CIDR rule with exceptions;
//   - a port's protocol defaults to TCP, no port number is every port of the
//     protocol, a string port is a named port, endPort a range.
func FromNetworkPolicy(np *networkingv1.NetworkPolicy) (policy.Policy, field.ErrorList) {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if np.Namespace == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "namespace"), "a NetworkPolicy is namespaced"))
	}
	errs = append(errs, validateSelector(&np.Spec.PodSelector, spec.Child("podSelector"))...)
	ingress, egress := false, len(np.Spec.Egress) > 0
	if len(np.Spec.PolicyTypes) == 0 {
		ingress = true
	} else {
		egress = false
		for i, t := range np.Spec.PolicyTypes {
			switch t {
			case networkingv1.PolicyTypeIngress:
				ingress = true
			case networkingv1.PolicyTypeEgress:
				egress = true
			default:
				errs = append(errs, field.NotSupported(spec.Child("policyTypes").Index(i), t, []string{"Ingress", "Egress"}))
			}
		}
	}
	rule := policy.Rule{EndpointSelector: selector(&np.Spec.PodSelector, "k8s:")}
	if ingress {
		rule.Ingress = []policy.PeerRule{}
		for i, r := range np.Spec.Ingress {
			p := spec.Child("ingress").Index(i)
			pr, e := npRule(r.From, r.Ports, p.Child("from"), p.Child("ports"))
			errs = append(errs, e...)
			rule.Ingress = append(rule.Ingress, pr)
		}
		if len(rule.Ingress) == 0 {
			rule.Ingress = []policy.PeerRule{{}} // isolated: nothing allowed
		}
	}
	if egress {
		for i, r := range np.Spec.Egress {
			p := spec.Child("egress").Index(i)
			pr, e := npRule(r.To, r.Ports, p.Child("to"), p.Child("ports"))
			errs = append(errs, e...)
			rule.Egress = append(rule.Egress, pr)
		}
		if len(rule.Egress) == 0 {
			rule.Egress = []policy.PeerRule{{}}
		}
	}
	if len(errs) > 0 {
		return policy.Policy{}, errs
	}
	return policy.Policy{Kind: KindNetworkPolicy, Namespace: np.Namespace, Name: np.Name, Rules: []policy.Rule{rule}}, nil
}

func npRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, peersPath, portsPath *field.Path) (policy.PeerRule, field.ErrorList) {
	var out policy.PeerRule
	var errs field.ErrorList
	if len(peers) == 0 {
		out.Entities = []policy.Entity{policy.EntityAll}
	}
	for i, peer := range peers {
		p := peersPath.Index(i)
		switch {
		case peer.IPBlock != nil:
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				errs = append(errs, field.Forbidden(p, "may not specify both ipBlock and another peer"))
				continue
			}
			rule, e := cidrRule(peer.IPBlock.CIDR, peer.IPBlock.Except, p.Child("ipBlock", "cidr"), p.Child("ipBlock", "except"))
			if len(e) > 0 {
				errs = append(errs, e...)
				continue
			}
			out.CIDRs = append(out.CIDRs, rule)
		case peer.PodSelector == nil && peer.NamespaceSelector == nil:
			errs = append(errs, field.Required(p, "must specify a peer"))
		default:
			e := validateSelector(peer.PodSelector, p.Child("podSelector"))
			e = append(e, validateSelector(peer.NamespaceSelector, p.Child("namespaceSelector"))...)
			if len(e) > 0 {
				errs = append(errs, e...)
				continue
			}
			out.Endpoints = append(out.Endpoints, peerSelector(peer.PodSelector, peer.NamespaceSelector))
		}
	}
	var pr policy.PortRule
	for i, port := range ports {
		p, err := npPort(port, portsPath.Index(i))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pr.Ports = append(pr.Ports, p)
	}
	if len(ports) > 0 {
		out.ToPorts = []policy.PortRule{pr}
	}
	return out, errs
}

// peerSelector combines a peer's pod and namespace selectors.
func peerSelector(pods, namespaces *metav1.LabelSelector) policy.Selector {
	out := selector(pods, "k8s:")
	if namespaces == nil {
		return out // the resolver scopes it to the policy's namespace
	}
	ns := selector(namespaces, identity.NamespaceLabelsPre)
	for k, v := range ns.MatchLabels {
		if out.MatchLabels == nil {
			out.MatchLabels = map[string]string{}
		}
		out.MatchLabels[k] = v
	}
	out.MatchExpressions = append(out.MatchExpressions, ns.MatchExpressions...)
	// Pods only, of every namespace the namespace selector matches.
	out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{Key: identity.NamespaceLabel, Operator: policy.OpExists})
	return out
}

func npPort(port networkingv1.NetworkPolicyPort, p *field.Path) (policy.Port, *field.Error) {
	proto := corev1.ProtocolTCP
	if port.Protocol != nil {
		proto = *port.Protocol
	}
	var out policy.Port
	switch proto {
	case corev1.ProtocolTCP:
		out.Proto = policy.TCP
	case corev1.ProtocolUDP:
		out.Proto = policy.UDP
	case corev1.ProtocolSCTP:
		out.Proto = policy.SCTP
	default:
		return out, field.NotSupported(p.Child("protocol"), proto, []string{"TCP", "UDP", "SCTP"})
	}
	if port.Port != nil {
		switch port.Port.Type {
		case intstr.Int:
			if port.Port.IntVal < 1 || port.Port.IntVal > 65535 {
				return out, field.Invalid(p.Child("port"), port.Port.IntVal, "must be from 1 to 65535")
			}
			out.Port = uint16(port.Port.IntVal)
		default:
			if msgs := validation.IsValidPortName(port.Port.StrVal); len(msgs) > 0 {
				return out, field.Invalid(p.Child("port"), port.Port.StrVal, msgs[0])
			}
			out.Name = port.Port.StrVal
		}
	}
	if port.EndPort != nil {
		switch {
		case port.Port == nil || out.Name != "":
			return out, field.Invalid(p.Child("endPort"), *port.EndPort, "a port range needs a numeric port")
		case *port.EndPort < int32(out.Port) || *port.EndPort > 65535:
			return out, field.Invalid(p.Child("endPort"), *port.EndPort, fmt.Sprintf("must be from port (%d) to 65535", out.Port))
		}
		out.EndPort = uint16(*port.EndPort)
	}
	return out, nil
}

func validateSelector(ls *metav1.LabelSelector, p *field.Path) field.ErrorList {
	if ls == nil {
		return nil
	}
	errs := metav1validation.ValidateLabelSelector(ls, metav1validation.LabelSelectorValidationOptions{}, p)
	if len(errs) == 0 {
		if _, err := metav1.LabelSelectorAsSelector(ls); err != nil {
			errs = append(errs, field.Invalid(p, ls.String(), err.Error()))
		}
	}
	return errs
}

package translate

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// CACertKey is the ConfigMap key of a BackendTLSPolicy's CA certificates.
const CACertKey = "ca.crt"

// PolicyStatus is one BackendTLSPolicy's ancestor statuses written by
// Membrane (one per Gateway of Membrane's whose routes reach a Service
// the policy targets); the writer keeps other controllers' entries.
type PolicyStatus struct {
	Namespace string                      `json:"namespace"`
	Name      string                      `json:"name"`
	Ancestors []gwv1.PolicyAncestorStatus `json:"ancestors"`
}

// backendTLS is one BackendTLSPolicy checked.
type backendTLS struct {
	policy     *gwv1.BackendTLSPolicy
	accepted   metav1.Condition
	resolved   metav1.Condition
	tls        *ir.UpstreamTLS // nil: not usable (its backends answer 5xx)
	conflicted bool            // another policy targets the same port first
	ancestors  map[types.NamespacedName]bool
	// reached: a route of a Gateway or an Ingress of Membrane's has a
	// backend the policy targets (its CA certificates may be served).
	reached bool
}

// policyTarget is a Service port (section "": every port) a policy
// targets.
type policyTarget struct {
	service types.NamespacedName
	section string
}

// checkBackendTLS validates every BackendTLSPolicy and settles conflicts:
// of the policies targeting the same Service port (or the same whole
// Service), the oldest one (then the first by name) applies, the others
// are Conflicted.
func (b *builder) checkBackendTLS() {
	for i := range b.in.BackendTLSPolicies {
		p := &b.in.BackendTLSPolicies[i]
		bt := &backendTLS{policy: p, ancestors: map[types.NamespacedName]bool{}}
		bt.accepted, bt.resolved, bt.tls = b.validateBackendTLS(p)
		b.policies = append(b.policies, bt)
	}
	slices.SortFunc(b.policies, func(a, c *backendTLS) int {
		return cmp.Or(a.policy.CreationTimestamp.Time.Compare(c.policy.CreationTimestamp.Time),
			cmp.Compare(a.policy.Namespace, c.policy.Namespace), cmp.Compare(a.policy.Name, c.policy.Name))
	})
	for _, bt := range b.policies {
		p := bt.policy
		for _, ref := range p.Spec.TargetRefs {
			if ref.Group != "" || ref.Kind != kindService {
				continue
			}
			t := policyTarget{service: types.NamespacedName{Namespace: p.Namespace, Name: string(ref.Name)}, section: string(ptrValue(ref.SectionName))}
			if first, ok := b.policyByTarget[t]; ok && first != bt {
				bt.conflicted = true
				bt.accepted = condition(gwv1.PolicyConditionAccepted, false, gwv1.PolicyReasonConflicted,
					fmt.Sprintf("BackendTLSPolicy %s targets the same Service port first", first.policy.Name), 0)
				continue
			}
			b.policyByTarget[t] = bt
		}
	}
}

// validateBackendTLS returns a policy's Accepted and ResolvedRefs
// conditions and, when it is usable, the TLS the gateway speaks to its
// backends.
func (b *builder) validateBackendTLS(p *gwv1.BackendTLSPolicy) (metav1.Condition, metav1.Condition, *ir.UpstreamTLS) {
	v := p.Spec.Validation
	msg := "Policy accepted"
	if len(p.Spec.Options) > 0 {
		msg += "; not supported, ignored: spec.options"
	}
	accepted := condition(gwv1.PolicyConditionAccepted, true, gwv1.PolicyReasonAccepted, msg, 0)
	resolved := condition(gwv1.BackendTLSPolicyConditionResolvedRefs, true, gwv1.BackendTLSPolicyReasonResolvedRefs, "References resolved", 0)
	invalid := func(reason gwv1.PolicyConditionReason, msg string) (metav1.Condition, metav1.Condition, *ir.UpstreamTLS) {
		return condition(gwv1.PolicyConditionAccepted, false, gwv1.BackendTLSPolicyReasonNoValidCACertificate, msg, 0),
			condition(gwv1.BackendTLSPolicyConditionResolvedRefs, false, reason, msg, 0), nil
	}
	if v.WellKnownCACertificates != nil && *v.WellKnownCACertificates != "" {
		return condition(gwv1.PolicyConditionAccepted, false, gwv1.PolicyReasonInvalid,
			"validation.wellKnownCACertificates is not supported (caCertificateRefs to ConfigMaps are)", 0), resolved, nil
	}
	var ca []byte
	for i, ref := range v.CACertificateRefs {
		field := fmt.Sprintf("validation.caCertificateRefs[%d]", i)
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			return invalid(gwv1.BackendTLSPolicyReasonInvalidKind, fmt.Sprintf("%s: kind %s of group %q is not supported (ConfigMaps are)", field, ref.Kind, ref.Group))
		}
		cm, ok := b.configMaps[types.NamespacedName{Namespace: p.Namespace, Name: string(ref.Name)}]
		if !ok {
			return invalid(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, fmt.Sprintf("%s: ConfigMap %s/%s not found", field, p.Namespace, ref.Name))
		}
		certs, ok := caCertificates(cm)
		if !ok {
			return invalid(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef,
				fmt.Sprintf("%s: ConfigMap %s/%s has no PEM certificates under %s", field, p.Namespace, ref.Name, CACertKey))
		}
		ca = append(ca, certs...)
	}
	if len(ca) == 0 {
		return invalid(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, "validation.caCertificateRefs: none given")
	}
	t := &ir.UpstreamTLS{SNI: string(v.Hostname), CAName: p.Namespace + "/" + p.Name, CA: ca}
	for i, san := range v.SubjectAltNames {
		switch {
		case san.Type == gwv1.HostnameSubjectAltNameType && san.Hostname != "":
			t.SANs = append(t.SANs, ir.SAN{DNS: string(san.Hostname)})
		case san.Type == gwv1.URISubjectAltNameType && san.URI != "":
			t.SANs = append(t.SANs, ir.SAN{URI: string(san.URI)})
		default:
			return condition(gwv1.PolicyConditionAccepted, false, gwv1.PolicyReasonInvalid,
				fmt.Sprintf("validation.subjectAltNames[%d]: type %s needs its value", i, san.Type), 0), resolved, nil
		}
	}
	return accepted, resolved, t
}

// caCertificates returns the PEM certificates under cm's CACertKey,
// ending in a newline (so that bundles concatenate); false when it holds
// none or anything else.
func caCertificates(cm *corev1.ConfigMap) ([]byte, bool) {
	certs := []byte(cm.Data[CACertKey])
	if !validCertificates(certs) {
		return nil, false
	}
	if certs[len(certs)-1] != '\n' {
		certs = append(certs, '\n')
	}
	return certs, true
}

// validCertificates reports whether b is one or more PEM certificates and
// nothing else.
func validCertificates(b []byte) bool {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return false
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return false
		}
		n++
	}
	return n > 0 && len(bytes.TrimSpace(b)) == 0
}

// backendTLSFor is the policy that applies to a Service port: the one
// targeting the port by name, else the one targeting the whole Service.
func (b *builder) backendTLSFor(svc types.NamespacedName, port string) *backendTLS {
	if bt, ok := b.policyByTarget[policyTarget{service: svc, section: port}]; ok && port != "" {
		return bt
	}
	return b.policyByTarget[policyTarget{service: svc}]
}

// targeting are the policies that target a Service port (by name or the
// whole Service), applying or not.
func (b *builder) targeting(svc types.NamespacedName, port string) []*backendTLS {
	var out []*backendTLS
	for _, bt := range b.policies {
		if bt.policy.Namespace != svc.Namespace {
			continue
		}
		if slices.ContainsFunc(bt.policy.Spec.TargetRefs, func(ref gwv1.LocalPolicyTargetReferenceWithSectionName) bool {
			s := string(ptrValue(ref.SectionName))
			return ref.Group == "" && ref.Kind == kindService && string(ref.Name) == svc.Name && (s == "" || s == port)
		}) {
			out = append(out, bt)
		}
	}
	return out
}

// policyStatus is the status of every policy that applies to a backend of
// a route attached to a Gateway of Membrane's (its ancestors).
func (b *builder) policyStatus() []PolicyStatus {
	var out []PolicyStatus
	for _, bt := range b.policies {
		if len(bt.ancestors) == 0 {
			continue
		}
		gen := bt.policy.Generation
		ps := PolicyStatus{Namespace: bt.policy.Namespace, Name: bt.policy.Name}
		gws := make([]types.NamespacedName, 0, len(bt.ancestors))
		for nn := range bt.ancestors {
			gws = append(gws, nn)
		}
		slices.SortFunc(gws, func(a, c types.NamespacedName) int {
			return cmp.Or(cmp.Compare(a.Namespace, c.Namespace), cmp.Compare(a.Name, c.Name))
		})
		for _, nn := range gws {
			acc, res := bt.accepted, bt.resolved
			acc.ObservedGeneration, res.ObservedGeneration = gen, gen
			ps.Ancestors = append(ps.Ancestors, gwv1.PolicyAncestorStatus{
				AncestorRef: gwv1.ParentReference{Group: ptr(gwv1.Group(gatewayGroup)), Kind: ptr(gwv1.Kind(kindGateway)),
					Namespace: ptr(gwv1.Namespace(nn.Namespace)), Name: gwv1.ObjectName(nn.Name)},
				ControllerName: ControllerName,
				Conditions:     []metav1.Condition{acc, res},
			})
		}
		out = append(out, ps)
	}
	return out
}

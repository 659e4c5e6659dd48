package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// rejectedPolicyIndex indexes Nodes by the policies their
// AnnotationProxyRejected annotation lists (see v1alpha1.PolicyRef).
const rejectedPolicyIndex = "membrane.io/proxy-rejected-policy"

const programmedMessage = "accepted by the node proxies"

// nodeMetadata is an empty Node as the operator caches Nodes: metadata only.
func nodeMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	return m
}

// proxyRejection decodes node's AnnotationProxyRejected annotation; has is
// false when the node has none.
func proxyRejection(node client.Object) (rej v1alpha1.ProxyRejection, has bool, err error) {
	value, has := node.GetAnnotations()[v1alpha1.AnnotationProxyRejected]
	if !has {
		return rej, false, nil
	}
	if err := json.Unmarshal([]byte(value), &rej); err != nil {
		return rej, true, fmt.Errorf("annotation %s: %w", v1alpha1.AnnotationProxyRejected, err)
	}
	return rej, true, nil
}

// rejectedPolicies is the rejectedPolicyIndex function: the policies node's
// proxy rejects, none when its annotation is missing or cannot be decoded.
func rejectedPolicies(node client.Object) []string {
	rej, _, err := proxyRejection(node)
	if err != nil {
		return nil
	}
	refs := slices.DeleteFunc(slices.Clone(rej.Policies), func(ref string) bool { return ref == "" })
	slices.Sort(refs)
	return slices.Compact(refs)
}

// nodeRejection is one node's proxy rejecting a policy.
type nodeRejection struct {
	node  string
	error string
}

// rejections returns the nodes whose proxy rejects the policy named ref,
// sorted by node name.
func (r *policyStatusReconciler[P]) rejections(ctx context.Context, ref string) ([]nodeRejection, error) {
	var nodes metav1.PartialObjectMetadataList
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := r.c.List(ctx, &nodes, client.MatchingFields{rejectedPolicyIndex: ref}); err != nil {
		return nil, fmt.Errorf("list nodes rejecting %s: %w", ref, err)
	}
	var out []nodeRejection
	for i := range nodes.Items {
		node := &nodes.Items[i]
		rej, _, err := proxyRejection(node)
		if err != nil || !slices.Contains(rej.Policies, ref) {
			continue
		}
		out = append(out, nodeRejection{node: node.Name, error: rej.Error})
	}
	slices.SortFunc(out, func(a, b nodeRejection) int { return strings.Compare(a.node, b.node) })
	return out, nil
}

// setProgrammed sets the Programmed condition in conds: False while nodes
// reject the policy (reason ProxyRejected) or while it uses fields Membrane
// does not implement (reason Unsupported; see unsupportedFields), True for a
// policy with HTTP rules (l7) that none rejects. A rejection is the reason
// when both apply, and the message lists both. A policy with none of these
// keeps its condition, but one that says the proxies reject it or that it is
// unsupported is deleted. It reports whether conds changed.
func setProgrammed(conds *[]metav1.Condition, rejections []nodeRejection, unsupported []string, l7 bool, generation int64) bool {
	switch {
	case len(rejections) > 0:
		msg := rejectedMessage(rejections, maxConditionMessage)
		if len(unsupported) > 0 {
			msg = joinMessages(append(rejectedParts(rejections), unsupported...), "problem", maxConditionMessage)
		}
		return meta.SetStatusCondition(conds, metav1.Condition{
			Type:               v1alpha1.ConditionProgrammed,
			Status:             metav1.ConditionFalse,
			Reason:             v1alpha1.ReasonProxyRejected,
			Message:            msg,
			ObservedGeneration: generation,
		})
	case len(unsupported) > 0:
		return meta.SetStatusCondition(conds, metav1.Condition{
			Type:               v1alpha1.ConditionProgrammed,
			Status:             metav1.ConditionFalse,
			Reason:             v1alpha1.ReasonUnsupported,
			Message:            joinMessages(unsupported, "unsupported field", maxConditionMessage),
			ObservedGeneration: generation,
		})
	case l7:
		return meta.SetStatusCondition(conds, metav1.Condition{
			Type:               v1alpha1.ConditionProgrammed,
			Status:             metav1.ConditionTrue,
			Reason:             v1alpha1.ReasonProgrammed,
			Message:            programmedMessage,
			ObservedGeneration: generation,
		})
	}
	if c := meta.FindStatusCondition(*conds, v1alpha1.ConditionProgrammed); c != nil &&
		(c.Reason == v1alpha1.ReasonProxyRejected || c.Reason == v1alpha1.ReasonUnsupported) {
		return meta.RemoveStatusCondition(conds, v1alpha1.ConditionProgrammed)
	}
	return false
}

// rejectedMessage is the Programmed=False message for rejections, in at most
// limit bytes.
func rejectedMessage(rejections []nodeRejection, limit int) string {
	return joinMessages(rejectedParts(rejections), "node", limit)
}

// rejectedParts says what each rejecting node's proxy reported.
func rejectedParts(rejections []nodeRejection) []string {
	parts := make([]string, len(rejections))
	for i, rej := range rejections {
		parts[i] = fmt.Sprintf("node %s: Envoy rejected the L7 configuration: %s", rej.node, rej.error)
	}
	return parts
}

// hasHTTPRules reports whether any of rules has L7 HTTP rules, which the
// node proxies enforce.
func hasHTTPRules(rules []v1alpha1.Rule) bool {
	http := func(ports []v1alpha1.PortRule) bool {
		return slices.ContainsFunc(ports, func(p v1alpha1.PortRule) bool { return p.Rules != nil && len(p.Rules.HTTP) > 0 })
	}
	for _, rule := range rules {
		for _, in := range rule.Ingress {
			if http(in.ToPorts) {
				return true
			}
		}
		for _, out := range rule.Egress {
			if http(out.ToPorts) {
				return true
			}
		}
	}
	return false
}

// rejectionChanged lets through the Node events that may change a policy's
// Programmed condition: those adding, changing or removing the
// AnnotationProxyRejected annotation. It logs annotations that cannot be
// decoded, which are otherwise ignored.
func (r *policyStatusReconciler[P]) rejectionChanged() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return r.checkRejection(e.Object) },
		DeleteFunc: func(e event.DeleteEvent) bool {
			_, has := e.Object.GetAnnotations()[v1alpha1.AnnotationProxyRejected]
			return has
		},
		UpdateFunc: func(e event.UpdateEvent) bool {
			old, hadOld := e.ObjectOld.GetAnnotations()[v1alpha1.AnnotationProxyRejected]
			cur, hasCur := e.ObjectNew.GetAnnotations()[v1alpha1.AnnotationProxyRejected]
			if hadOld == hasCur && old == cur {
				return false
			}
			r.checkRejection(e.ObjectNew)
			return true
		},
		GenericFunc: func(e event.GenericEvent) bool { return r.checkRejection(e.Object) },
	}
}

// checkRejection reports whether node has the AnnotationProxyRejected
// annotation and logs it when it cannot be decoded.
func (r *policyStatusReconciler[P]) checkRejection(node client.Object) bool {
	_, has, err := proxyRejection(node)
	if err != nil {
		r.log.Warn("ignoring undecodable node annotation", "node", node.GetName(), "error", err)
	}
	return has
}

// rejectedByNode maps a Node to the policies of the reconciler's kind its
// annotation lists. For an update it is called with the old and the new
// Node, so policies the node no longer rejects are reconciled too.
func (r *policyStatusReconciler[P]) rejectedByNode(_ context.Context, node client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, ref := range rejectedPolicies(node) {
		if key, ok := r.policyKey(ref); ok {
			reqs = append(reqs, reconcile.Request{NamespacedName: key})
		}
	}
	return reqs
}

// policyKey parses a v1alpha1.PolicyRef naming a policy of the reconciler's
// kind.
func (r *policyStatusReconciler[P]) policyKey(ref string) (types.NamespacedName, bool) {
	rest, ok := strings.CutPrefix(ref, r.kind+" ")
	if !ok {
		return types.NamespacedName{}, false
	}
	ns, name, hasNS := strings.Cut(rest, "/")
	if !hasNS {
		ns, name = "", rest
	}
	if hasNS != r.namespaced || (hasNS && ns == "") || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}

package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// RouteConditionProgrammed is the condition Membrane adds to a route's
// parent status while the node Envoys reject what the route's rules or the
// Gateway listeners it attaches to became: False, reason ReasonProxyRejected,
// the rules or listeners and Envoy's error in its message. It is removed
// once Envoy accepts them.
const RouteConditionProgrammed = "membrane.io/Programmed"

// ReasonProxyRejected is the reason of the conditions that report a
// rejection by the node Envoys.
const ReasonProxyRejected = "ProxyRejected"

// nodeMetadata is an empty Node as the operator caches Nodes: metadata only.
func nodeMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	return m
}

// proxyRejections reads the gateway rejections the node agents report on
// their Nodes (v1alpha1.AnnotationProxyRejected), by node name.
func (r *Reconciler) proxyRejections(ctx context.Context) (map[string][]v1alpha1.GatewayRejection, error) {
	var nodes metav1.PartialObjectMetadataList
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := r.c.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := map[string][]v1alpha1.GatewayRejection{}
	for _, n := range nodes.Items {
		if g := decodeGatewayRejections(&n); len(g) > 0 {
			out[n.Name] = g
		}
	}
	return out, nil
}

func decodeGatewayRejections(node client.Object) []v1alpha1.GatewayRejection {
	value, ok := node.GetAnnotations()[v1alpha1.AnnotationProxyRejected]
	if !ok {
		return nil
	}
	var rej v1alpha1.ProxyRejection
	if err := json.Unmarshal([]byte(value), &rej); err != nil {
		return nil
	}
	return rej.Gateways
}

// rejection is one Envoy listener's rejection, merged over the nodes.
type rejection struct {
	v1alpha1.GatewayRejection
	nodes []string
}

// message says what was rejected where and why.
func (rj rejection) message(what string) string {
	return fmt.Sprintf("%s rejected by the node Envoy on %s: %s; the last accepted configuration keeps serving",
		what, strings.Join(rj.nodes, ", "), strings.TrimSuffix(rj.Error, "."))
}

// mergeRejections groups the nodes' rejections by Gateway, port, listeners,
// rules and error (nodes sorted), sorted.
func mergeRejections(byNode map[string][]v1alpha1.GatewayRejection) []rejection {
	var out []rejection
	for _, node := range slices.Sorted(maps.Keys(byNode)) {
		for _, g := range byNode[node] {
			i := slices.IndexFunc(out, func(o rejection) bool {
				return o.Namespace == g.Namespace && o.Name == g.Name && o.Port == g.Port && o.Error == g.Error &&
					slices.Equal(o.Listeners, g.Listeners) && slices.Equal(o.Rules, g.Rules)
			})
			if i < 0 {
				out = append(out, rejection{GatewayRejection: g})
				i = len(out) - 1
			}
			out[i].nodes = append(out[i].nodes, "node "+node)
		}
	}
	slices.SortFunc(out, func(a, b rejection) int {
		return strings.Compare(fmt.Sprintf("%s/%s/%d", a.Namespace, a.Name, a.Port), fmt.Sprintf("%s/%s/%d", b.Namespace, b.Name, b.Port))
	})
	return out
}

// foldRejections writes the node Envoys' rejections into the status st
// computed from in: the Gateway's Programmed condition and its rejected
// listeners' become False (reason Invalid) with Envoy's error, the parent
// statuses of the routes concerned get RouteConditionProgrammed False, and
// an Ingress's rejected listeners become a problem of the Ingress (an
// Event: Ingress status has no conditions).
func foldRejections(st *translate.Status, in translate.Input, rejs []rejection) {
	for _, rj := range rejs {
		listeners := rj.Listeners
		if len(listeners) == 0 {
			listeners = listenersOnPort(in, rj.Namespace, rj.Name, rj.Port)
		}
		what := fmt.Sprintf("port %d", rj.Port)
		if len(listeners) > 0 {
			what = fmt.Sprintf("listener %s (port %d)", strings.Join(listeners, ", "), rj.Port)
		}
		if len(rj.Rules) > 0 {
			what += " with the rules " + strings.Join(rj.Rules, ", ")
		}
		if strings.HasPrefix(rj.Name, ingressPrefix) {
			foldIngress(st, in, rj)
			continue
		}
		for i := range st.Gateways {
			g := &st.Gateways[i]
			if g.Namespace != rj.Namespace || g.Name != rj.Name {
				continue
			}
			gen := int64(0)
			if c := meta.FindStatusCondition(g.Status.Conditions, string(gwv1.GatewayConditionProgrammed)); c != nil {
				gen = c.ObservedGeneration
				msg := rj.message(what)
				if c.Status == metav1.ConditionFalse && c.Reason == string(gwv1.GatewayReasonInvalid) {
					msg = c.Message + "; " + msg // another port's rejection
				}
				*c = metav1.Condition{Type: c.Type, Status: metav1.ConditionFalse, Reason: string(gwv1.GatewayReasonInvalid), Message: msg, ObservedGeneration: gen}
			}
			for j := range g.Status.Listeners {
				ls := &g.Status.Listeners[j]
				if !slices.Contains(listeners, string(ls.Name)) {
					continue
				}
				if c := meta.FindStatusCondition(ls.Conditions, string(gwv1.ListenerConditionProgrammed)); c != nil {
					*c = metav1.Condition{Type: c.Type, Status: metav1.ConditionFalse, Reason: string(gwv1.ListenerReasonInvalid),
						Message: rj.message("listener " + string(ls.Name)), ObservedGeneration: c.ObservedGeneration}
				}
			}
		}
		for _, routes := range []*[]translate.RouteStatus{&st.HTTPRoutes, &st.GRPCRoutes, &st.TLSRoutes, &st.TCPRoutes, &st.UDPRoutes} {
			prefix := map[*[]translate.RouteStatus]string{&st.GRPCRoutes: "grpcroute:"}[routes]
			for i := range *routes {
				foldRoute(&(*routes)[i], prefix, rj, listeners, in)
			}
		}
	}
}

// foldRoute adds RouteConditionProgrammed to the route's parent statuses
// that the rejection rj concerns: its rules named by rj (when rj names
// rules), on the rejected listeners of rj's Gateway.
func foldRoute(rs *translate.RouteStatus, prefix string, rj rejection, listeners []string, in translate.Input) {
	var rules []string
	for _, rule := range rj.Rules {
		route, idx, ok := strings.Cut(rule, "/rule/")
		if ok && route == prefix+rs.Namespace+"/"+rs.Name {
			rules = append(rules, "rules["+idx+"]")
		}
	}
	if len(rj.Rules) > 0 && len(rules) == 0 {
		return
	}
	for i := range rs.Parents {
		p := &rs.Parents[i]
		ref := p.ParentRef
		ns := rs.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if (ref.Kind != nil && *ref.Kind != "Gateway") || ns != rj.Namespace || string(ref.Name) != rj.Name {
			continue
		}
		if ref.SectionName != nil && !slices.Contains(listeners, string(*ref.SectionName)) {
			continue
		}
		if ref.Port != nil && int32(*ref.Port) != rj.Port {
			continue
		}
		if ref.SectionName == nil && ref.Port == nil && len(rules) == 0 && !attachedOnPort(in, rj) {
			continue
		}
		what := fmt.Sprintf("listener %s of Gateway %s/%s", strings.Join(listeners, ", "), rj.Namespace, rj.Name)
		if len(rules) > 0 {
			what = strings.Join(rules, ", ") + " on " + what
		}
		gen := int64(0)
		if len(p.Conditions) > 0 {
			gen = p.Conditions[0].ObservedGeneration
		}
		meta.SetStatusCondition(&p.Conditions, metav1.Condition{Type: RouteConditionProgrammed, Status: metav1.ConditionFalse,
			Reason: ReasonProxyRejected, Message: rj.message(what), ObservedGeneration: gen})
	}
}

// attachedOnPort: a route attached to the whole Gateway is attached to the
// rejected port's listeners when the Gateway has any there.
func attachedOnPort(in translate.Input, rj rejection) bool {
	return len(listenersOnPort(in, rj.Namespace, rj.Name, rj.Port)) > 0
}

// listenersOnPort are the names of the Gateway's listeners on port.
func listenersOnPort(in translate.Input, ns, name string, port int32) []string {
	var out []string
	for _, gw := range in.Gateways {
		if gw.Namespace != ns || gw.Name != name {
			continue
		}
		for _, l := range gw.Spec.Listeners {
			if int32(l.Port) == port {
				out = append(out, string(l.Name))
			}
		}
	}
	return out
}

// ingressPrefix starts the names of the Ingresses' synthetic Gateways
// (gateway/translate).
var ingressPrefix = strings.TrimSuffix(translate.SharedIngressKey.Name, "shared")

// foldIngress makes the rejection of an Ingress's listener a problem of the
// Ingresses it serves: the Ingress its synthetic Gateway stands for; for
// the shared address, those whose rules it names, or every shared one.
func foldIngress(st *translate.Status, in translate.Input, rj rejection) {
	var named []string
	for _, rule := range rj.Rules {
		route, _, _ := strings.Cut(rule, "/rule/")
		if ns, rest, ok := strings.Cut(route, "/"); ok {
			name, _, _ := strings.Cut(rest, "/")
			named = append(named, ns+"/"+name)
		}
	}
	shared := map[string]bool{}
	for _, o := range translate.OwnedIngresses(in.IngressClasses, in.Ingresses) {
		if o.Key == translate.SharedIngressKey {
			shared[o.Ingress.Namespace+"/"+o.Ingress.Name] = true
		}
	}
	dedicated := strings.TrimPrefix(rj.Name, ingressPrefix)
	for i := range st.Ingresses {
		s := &st.Ingresses[i]
		key := s.Namespace + "/" + s.Name
		ours := s.Namespace == rj.Namespace && s.Name == dedicated
		if rj.Name == translate.SharedIngressKey.Name {
			ours = shared[key] && (len(named) == 0 || slices.Contains(named, key))
		}
		if ours {
			what := fmt.Sprintf("port %d", rj.Port)
			if len(rj.Rules) > 0 {
				what += " (rules " + strings.Join(rj.Rules, ", ") + ")"
			}
			s.Problems = append(s.Problems, rj.message(what))
		}
	}
}

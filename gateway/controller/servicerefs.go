package controller

import (
	"context"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"

	"github.com/membrane-mesh/membrane/gateway/translate"
)

// serviceRefIndex is the field index, on every kind whose objects the
// translation resolves Services for (routes, Ingresses,
// BackendTLSPolicies), of the Services an object refers to, as
// "namespace/name".
const serviceRefIndex = "membrane.serviceRefs"

// serviceReferrers are the kinds that refer to Services (the experimental
// route kinds only when the cluster serves them).
func serviceReferrers(served translate.ExperimentalKinds) []referrer {
	out := []referrer{
		{&gwv1.HTTPRoute{}, func() client.ObjectList { return &gwv1.HTTPRouteList{} }, httpRouteServices},
		{&gwv1.GRPCRoute{}, func() client.ObjectList { return &gwv1.GRPCRouteList{} }, grpcRouteServices},
		{&networkingv1.Ingress{}, func() client.ObjectList { return &networkingv1.IngressList{} }, ingressServices},
		{&gwv1.BackendTLSPolicy{}, func() client.ObjectList { return &gwv1.BackendTLSPolicyList{} }, policyServices},
	}
	if served.TLSRoute {
		out = append(out, referrer{&gwv1alpha2.TLSRoute{}, func() client.ObjectList { return &gwv1alpha2.TLSRouteList{} }, tlsRouteServices})
	}
	if served.TCPRoute {
		out = append(out, referrer{&gwv1alpha2.TCPRoute{}, func() client.ObjectList { return &gwv1alpha2.TCPRouteList{} }, tcpRouteServices})
	}
	if served.UDPRoute {
		out = append(out, referrer{&gwv1alpha2.UDPRoute{}, func() client.ObjectList { return &gwv1alpha2.UDPRouteList{} }, udpRouteServices})
	}
	return out
}

// serviceEvents maps a Service's event to the work item when the Service
// can change what the controller computes: it is of type LoadBalancer
// (its address claim takes part in the assignment), or an object of a
// referring kind refers to it (c must hold their serviceRefIndex). For an
// update, handler.EnqueueRequestsFromMapFunc maps the old object and the
// new one, so a Service that stops being a LoadBalancer reconciles too.
// The events of every other Service (most of a cluster's) cost a few
// index lookups and no reconcile.
func serviceEvents(log *slog.Logger, c client.Reader, referrers []referrer) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		svc, ok := o.(*corev1.Service)
		if !ok {
			return nil
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer || referredTo(ctx, log, c, serviceRefIndex, svc, referrers) {
			return []reconcile.Request{workItem()}
		}
		return nil
	}
}

// serviceKey is the "namespace/name" of the Service a backend reference of
// an object in namespace ns names (its namespace defaults to ns), false
// for a reference to another kind.
func serviceKey(ns string, ref gwv1.BackendObjectReference) (string, bool) {
	if ref.Group != nil && *ref.Group != "" {
		return "", false
	}
	if ref.Kind != nil && *ref.Kind != "Service" {
		return "", false
	}
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	return ns + "/" + string(ref.Name), true
}

// backendKeys collects the Services an object's backend references name.
type backendKeys struct {
	ns   string
	keys []string
}

func (b *backendKeys) add(ref gwv1.BackendObjectReference) {
	if k, ok := serviceKey(b.ns, ref); ok {
		b.keys = append(b.keys, k)
	}
}

func (b *backendKeys) mirror(m *gwv1.HTTPRequestMirrorFilter) {
	if m != nil {
		b.add(m.BackendRef)
	}
}

func (b *backendKeys) result() []string {
	slices.Sort(b.keys)
	return slices.Compact(b.keys)
}

// httpRouteServices indexes an HTTPRoute by the Services of its backends
// and of its mirror filters (of the rules and of the backends).
func httpRouteServices(o client.Object) []string {
	r, ok := o.(*gwv1.HTTPRoute)
	if !ok {
		return nil
	}
	b := backendKeys{ns: r.Namespace}
	for _, rule := range r.Spec.Rules {
		for _, f := range rule.Filters {
			b.mirror(f.RequestMirror)
		}
		for _, be := range rule.BackendRefs {
			b.add(be.BackendObjectReference)
			for _, f := range be.Filters {
				b.mirror(f.RequestMirror)
			}
		}
	}
	return b.result()
}

// grpcRouteServices indexes a GRPCRoute as httpRouteServices does an
// HTTPRoute.
func grpcRouteServices(o client.Object) []string {
	r, ok := o.(*gwv1.GRPCRoute)
	if !ok {
		return nil
	}
	b := backendKeys{ns: r.Namespace}
	for _, rule := range r.Spec.Rules {
		for _, f := range rule.Filters {
			b.mirror(f.RequestMirror)
		}
		for _, be := range rule.BackendRefs {
			b.add(be.BackendObjectReference)
			for _, f := range be.Filters {
				b.mirror(f.RequestMirror)
			}
		}
	}
	return b.result()
}

// tlsRouteServices, tcpRouteServices and udpRouteServices index a route
// by the Services of its backends.
func tlsRouteServices(o client.Object) []string {
	r, ok := o.(*gwv1alpha2.TLSRoute)
	if !ok {
		return nil
	}
	return l4RouteServices(r.Namespace, len(r.Spec.Rules), func(i int) []gwv1.BackendRef { return r.Spec.Rules[i].BackendRefs })
}

func tcpRouteServices(o client.Object) []string {
	r, ok := o.(*gwv1alpha2.TCPRoute)
	if !ok {
		return nil
	}
	return l4RouteServices(r.Namespace, len(r.Spec.Rules), func(i int) []gwv1.BackendRef { return r.Spec.Rules[i].BackendRefs })
}

func udpRouteServices(o client.Object) []string {
	r, ok := o.(*gwv1alpha2.UDPRoute)
	if !ok {
		return nil
	}
	return l4RouteServices(r.Namespace, len(r.Spec.Rules), func(i int) []gwv1.BackendRef { return r.Spec.Rules[i].BackendRefs })
}

func l4RouteServices(ns string, rules int, backends func(int) []gwv1.BackendRef) []string {
	b := backendKeys{ns: ns}
	for i := range rules {
		for _, be := range backends(i) {
			b.add(be.BackendObjectReference)
		}
	}
	return b.result()
}

// ingressServices indexes an Ingress by the Services of its default
// backend and of its paths (all in its namespace).
func ingressServices(o client.Object) []string {
	ing, ok := o.(*networkingv1.Ingress)
	if !ok {
		return nil
	}
	b := backendKeys{ns: ing.Namespace}
	add := func(be *networkingv1.IngressBackend) {
		if be != nil && be.Service != nil {
			b.keys = append(b.keys, ing.Namespace+"/"+be.Service.Name)
		}
	}
	add(ing.Spec.DefaultBackend)
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for i := range rule.HTTP.Paths {
			add(&rule.HTTP.Paths[i].Backend)
		}
	}
	return b.result()
}

// policyServices indexes a BackendTLSPolicy by the Services it targets
// (in its namespace).
func policyServices(o client.Object) []string {
	p, ok := o.(*gwv1.BackendTLSPolicy)
	if !ok {
		return nil
	}
	b := backendKeys{ns: p.Namespace}
	for _, ref := range p.Spec.TargetRefs {
		if ref.Group == "" && ref.Kind == "Service" {
			b.keys = append(b.keys, p.Namespace+"/"+string(ref.Name))
		}
	}
	return b.result()
}

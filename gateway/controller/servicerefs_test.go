package controller

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"

	"github.com/membrane-mesh/membrane/gateway/translate"
)

func backendRef(name string, ns, group, kind *string) gwv1.BackendObjectReference {
	ref := gwv1.BackendObjectReference{Name: gwv1.ObjectName(name)}
	if ns != nil {
		ref.Namespace = ptr(gwv1.Namespace(*ns))
	}
	if group != nil {
		ref.Group = ptr(gwv1.Group(*group))
	}
	if kind != nil {
		ref.Kind = ptr(gwv1.Kind(*kind))
	}
	return ref
}

// TestServiceRefIndexes: each referring kind is indexed by the Services it
// names, in its own namespace unless the reference says another; references
// to other kinds are not indexed.
func TestServiceRefIndexes(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "x", Namespace: "app"}
	other, empty, svcKind, importKind, mcsGroup := "other", "", "Service", "ServiceImport", "multicluster.x-k8s.io"
	mirror := func(ref gwv1.BackendObjectReference) *gwv1.HTTPRequestMirrorFilter {
		return &gwv1.HTTPRequestMirrorFilter{BackendRef: ref}
	}
	for _, c := range []struct {
		name  string
		index client.IndexerFunc
		obj   client.Object
		want  []string
	}{
		{"HTTPRoute", httpRouteServices, &gwv1.HTTPRoute{ObjectMeta: meta, Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{
			{
				Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: mirror(backendRef("mirror", &other, nil, nil))}},
				BackendRefs: []gwv1.HTTPBackendRef{
					{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("web", nil, nil, nil)}},
					{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("web", nil, &empty, &svcKind)}}, // the same once
					{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("api", &other, nil, &svcKind)},
						Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: mirror(backendRef("shadow", nil, nil, nil))}}},
					{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("imported", nil, &mcsGroup, &importKind)}},
				},
			},
			{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("second", nil, nil, nil)}}}},
		}}}, []string{"app/second", "app/shadow", "app/web", "other/api", "other/mirror"}},
		{"HTTPRoute without backends", httpRouteServices, &gwv1.HTTPRoute{ObjectMeta: meta}, nil},
		{"GRPCRoute", grpcRouteServices, &gwv1.GRPCRoute{ObjectMeta: meta, Spec: gwv1.GRPCRouteSpec{Rules: []gwv1.GRPCRouteRule{{
			Filters: []gwv1.GRPCRouteFilter{{Type: gwv1.GRPCRouteFilterRequestMirror, RequestMirror: mirror(backendRef("mirror", nil, nil, nil))}},
			BackendRefs: []gwv1.GRPCBackendRef{
				{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("grpc", &other, nil, nil)}},
				{BackendRef: gwv1.BackendRef{BackendObjectReference: backendRef("imported", nil, &mcsGroup, &importKind)}},
			},
		}}}}, []string{"app/mirror", "other/grpc"}},
		{"TLSRoute", tlsRouteServices, &gwv1alpha2.TLSRoute{ObjectMeta: meta, Spec: gwv1alpha2.TLSRouteSpec{Rules: []gwv1alpha2.TLSRouteRule{{
			BackendRefs: []gwv1.BackendRef{
				{BackendObjectReference: backendRef("tls", nil, nil, nil)},
				{BackendObjectReference: backendRef("far", &other, nil, nil)},
				{BackendObjectReference: backendRef("bucket", nil, ptr("example.com"), ptr("Bucket"))},
			},
		}}}}, []string{"app/tls", "other/far"}},
		{"TCPRoute", tcpRouteServices, &gwv1alpha2.TCPRoute{ObjectMeta: meta, Spec: gwv1alpha2.TCPRouteSpec{Rules: []gwv1alpha2.TCPRouteRule{
			{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: backendRef("db", nil, nil, nil)}}},
			{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: backendRef("db", &other, nil, nil)}}},
		}}}, []string{"app/db", "other/db"}},
		{"UDPRoute", udpRouteServices, &gwv1alpha2.UDPRoute{ObjectMeta: meta, Spec: gwv1alpha2.UDPRouteSpec{Rules: []gwv1alpha2.UDPRouteRule{{
			BackendRefs: []gwv1.BackendRef{{BackendObjectReference: backendRef("dns", nil, nil, nil)}},
		}}}}, []string{"app/dns"}},
		{"Ingress", ingressServices, &networkingv1.Ingress{ObjectMeta: meta, Spec: networkingv1.IngressSpec{
			DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "default"}},
			Rules: []networkingv1.IngressRule{
				{Host: "a.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
					{Path: "/", Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web"}}},
					{Path: "/static", Backend: networkingv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "static"}}},
				}}}},
				{Host: "no-http.example.com"},
			},
		}}, []string{"app/default", "app/web"}},
		{"Ingress with a resource backend only", ingressServices, &networkingv1.Ingress{ObjectMeta: meta, Spec: networkingv1.IngressSpec{
			DefaultBackend: &networkingv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "static"}},
		}}, nil},
		{"BackendTLSPolicy", policyServices, &gwv1.BackendTLSPolicy{ObjectMeta: meta, Spec: gwv1.BackendTLSPolicySpec{TargetRefs: []gwv1.LocalPolicyTargetReferenceWithSectionName{
			{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "secure"}},
			{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "secure"}, SectionName: ptr(gwv1.SectionName("https"))},
			{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Group: gwv1.Group(mcsGroup), Kind: "ServiceImport", Name: "imported"}},
		}}}, []string{"app/secure"}},
		{"the wrong kind", httpRouteServices, &networkingv1.Ingress{ObjectMeta: meta}, nil},
	} {
		if got := c.index(c.obj); !slices.Equal(got, c.want) {
			t.Errorf("%s: indexed by %q, want %q", c.name, got, c.want)
		}
	}
}

// TestServiceEvents: a Service enqueues the work item when it is a
// LoadBalancer (or stops being one) or an object refers to it, created,
// changed or deleted; any other Service does not.
func TestServiceEvents(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, gwv1.Install, gwv1alpha2.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	referrers := serviceReferrers(translate.ExperimentalKinds{TLSRoute: true, TCPRoute: true, UDPRoute: true})
	b := fake.NewClientBuilder().WithScheme(scheme)
	for _, r := range referrers {
		b = b.WithIndex(r.obj, serviceRefIndex, r.index)
	}
	backend := func(name, ns string) gwv1.BackendRef {
		return gwv1.BackendRef{BackendObjectReference: backendRef(name, &ns, nil, nil)}
	}
	c := b.WithObjects(
		&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "app"}, Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{
			{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: backend("web", "app")}, {BackendRef: backend("shared", "infra")}}},
		}}},
		&gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "app"}, Spec: gwv1.GRPCRouteSpec{Rules: []gwv1.GRPCRouteRule{
			{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backend("grpc", "app")}}},
		}}},
		&gwv1alpha2.TLSRoute{ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "app"}, Spec: gwv1alpha2.TLSRouteSpec{Rules: []gwv1alpha2.TLSRouteRule{
			{BackendRefs: []gwv1.BackendRef{backend("tls", "app")}},
		}}},
		&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "i", Namespace: "app"}, Spec: networkingv1.IngressSpec{
			DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "legacy"}},
		}},
		&gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app"}, Spec: gwv1.BackendTLSPolicySpec{
			TargetRefs: []gwv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "secure"}}},
		}},
	).Build()
	h := handler.EnqueueRequestsFromMapFunc(serviceEvents(slog.New(slog.DiscardHandler), c, referrers))
	svc := func(ns, name string, typ corev1.ServiceType) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Type: typ}}
	}
	cip := func(ns, name string) *corev1.Service { return svc(ns, name, corev1.ServiceTypeClusterIP) }
	lb := svc("app", "lb", corev1.ServiceTypeLoadBalancer)
	lbGone := svc("app", "lb", corev1.ServiceTypeClusterIP)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		send func(q workqueue.TypedRateLimitingInterface[reconcile.Request])
		want bool
	}{
		{"create HTTPRoute backend", createEvent(ctx, h, cip("app", "web")), true},
		{"create HTTPRoute backend in another namespace", createEvent(ctx, h, cip("infra", "shared")), true},
		{"create GRPCRoute backend", createEvent(ctx, h, cip("app", "grpc")), true},
		{"create TLSRoute backend", createEvent(ctx, h, cip("app", "tls")), true},
		{"create Ingress backend", createEvent(ctx, h, cip("app", "legacy")), true},
		{"create BackendTLSPolicy target", createEvent(ctx, h, cip("app", "secure")), true},
		{"create unreferenced", createEvent(ctx, h, cip("app", "lonely")), false},
		{"create unreferenced, same name elsewhere", createEvent(ctx, h, cip("infra", "web")), false},
		{"create LoadBalancer", createEvent(ctx, h, lb), true},
		{"update referenced", updateEvent(ctx, h, cip("app", "web"), cip("app", "web")), true},
		{"update unreferenced", updateEvent(ctx, h, cip("app", "lonely"), cip("app", "lonely")), false},
		{"LoadBalancer to ClusterIP", updateEvent(ctx, h, lb, lbGone), true},
		{"ClusterIP to LoadBalancer", updateEvent(ctx, h, lbGone, lb), true},
		{"delete referenced", deleteEvent(ctx, h, cip("app", "web")), true},
		{"delete unreferenced", deleteEvent(ctx, h, cip("app", "lonely")), false},
		{"delete LoadBalancer", deleteEvent(ctx, h, lb), true},
	} {
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		tc.send(q)
		if got := q.Len() == 1; got != tc.want {
			t.Errorf("%s: enqueued %v (queue length %d), want %v", tc.name, got, q.Len(), tc.want)
		}
		if q.Len() == 1 {
			if item, _ := q.Get(); item != workItem() {
				t.Errorf("%s: enqueued %v, want %v", tc.name, item, workItem())
			}
		}
		q.ShutDown()
	}
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

func createEvent(ctx context.Context, h handler.EventHandler, o client.Object) func(queue) {
	return func(q queue) { h.Create(ctx, event.CreateEvent{Object: o}, q) }
}

func updateEvent(ctx context.Context, h handler.EventHandler, old, o client.Object) func(queue) {
	return func(q queue) { h.Update(ctx, event.UpdateEvent{ObjectOld: old, ObjectNew: o}, q) }
}

func deleteEvent(ctx context.Context, h handler.EventHandler, o client.Object) func(queue) {
	return func(q queue) { h.Delete(ctx, event.DeleteEvent{Object: o}, q) }
}

// TestServiceEventsListError: a Service whose referrers cannot be listed
// enqueues the work item.
func TestServiceEventsListError(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, gwv1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).Build() // no index: every List by it fails
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"}}
	got := serviceEvents(slog.New(slog.DiscardHandler), c, serviceReferrers(translate.ExperimentalKinds{}))(context.Background(), svc)
	if !slices.Equal(got, []reconcile.Request{workItem()}) {
		t.Errorf("got %v, want the work item", got)
	}
}

// flakyIndexer fails IndexField with err for its first failures calls.
type flakyIndexer struct {
	failures int
	err      error
	calls    int
}

func (f *flakyIndexer) IndexField(context.Context, client.Object, string, client.IndexerFunc) error {
	f.calls++
	if f.calls <= f.failures {
		return f.err
	}
	return nil
}

// TestIndexServiceRefsWaitsForTheKind: a kind not served yet (its CRD is
// being established) is waited for; any other error fails at once.
func TestIndexServiceRefsWaitsForTheKind(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	refs := serviceReferrers(translate.ExperimentalKinds{})[:1]
	notYet := &flakyIndexer{failures: 1, err: &apimeta.NoKindMatchError{GroupKind: schema.GroupKind{Group: gwv1.GroupName, Kind: "HTTPRoute"}}}
	if err := indexRefs(context.Background(), log, notYet, serviceRefIndex, refs); err != nil || notYet.calls != 2 {
		t.Errorf("kind served on the second try: %v after %d calls, want success after 2", err, notYet.calls)
	}
	broken := &flakyIndexer{failures: 1, err: errors.New("index conflict")}
	if err := indexRefs(context.Background(), log, broken, serviceRefIndex, refs); err == nil || broken.calls != 1 {
		t.Errorf("other error: %v after %d calls, want it at once", err, broken.calls)
	}
}

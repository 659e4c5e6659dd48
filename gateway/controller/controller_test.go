package controller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// TestReconcile runs the controller against a fake API: it creates its
// GatewayClass, gives the Gateway an address from the pool, writes the
// statuses, keeps another controller's route status and the transition
// times of conditions that did not change.
func TestReconcile(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	port := gwv1.PortNumber(80)
	other := gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "elsewhere"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}}}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithStatusSubresource(&gwv1.GatewayClass{}, &gwv1.Gateway{}, &gwv1.HTTPRoute{}).
		WithObjects(
			&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Generation: 1},
				Spec: gwv1.GatewaySpec{GatewayClassName: "membrane", Listeners: []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: port}}}},
			&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default", Generation: 1},
				Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "web"}}},
					Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "missing", Port: &port}}}}}}},
				Status: gwv1.HTTPRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{other}}}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
			&v1alpha1.MembraneLoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
				Spec: v1alpha1.LoadBalancerIPPoolSpec{Blocks: []v1alpha1.LoadBalancerIPBlock{{Start: "10.0.0.10", Stop: "10.0.0.20"}}}},
		).Build()
	r := New(slog.New(slog.DiscardHandler), c, Config{ClassName: "membrane"})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return t0 }
	ctx := context.Background()
	for range 2 { // the first pass creates the class; the second sees it in the list
		if _, err := r.Reconcile(ctx, workItem()); err != nil {
			t.Fatal(err)
		}
	}

	var gc gwv1.GatewayClass
	must(t, c.Get(ctx, types.NamespacedName{Name: "membrane"}, &gc))
	if gc.Spec.ControllerName != translate.ControllerName || !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") {
		t.Errorf("GatewayClass %+v", gc)
	}
	var gw gwv1.Gateway
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "web"}, &gw))
	if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != "10.0.0.10" {
		t.Errorf("gateway addresses %+v, want 10.0.0.10", gw.Status.Addresses)
	}
	if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") {
		t.Errorf("gateway conditions %+v", gw.Status.Conditions)
	}
	var rt gwv1.HTTPRoute
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "r"}, &rt))
	if len(rt.Status.Parents) != 2 || rt.Status.Parents[0].ControllerName != "example.com/other" {
		t.Fatalf("route parents %+v: want the other controller's entry kept, then ours", rt.Status.Parents)
	}
	rc := meta.FindStatusCondition(rt.Status.Parents[1].Conditions, "ResolvedRefs")
	if rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != "BackendNotFound" || rc.ObservedGeneration != 1 {
		t.Errorf("ResolvedRefs %+v, want False BackendNotFound of generation 1", rc)
	}

	// Later, nothing changed: no condition moves its transition time, and
	// the Gateway keeps its address.
	r.now = func() time.Time { return t0.Add(time.Hour) }
	if _, err := r.Reconcile(ctx, workItem()); err != nil {
		t.Fatal(err)
	}
	var again gwv1.Gateway
	must(t, c.Get(ctx, client.ObjectKeyFromObject(&gw), &again))
	if got := meta.FindStatusCondition(again.Status.Conditions, "Programmed").LastTransitionTime.Time; !got.Equal(t0) {
		t.Errorf("Programmed moved to %s", got)
	}
	if again.Status.Addresses[0].Value != "10.0.0.10" {
		t.Errorf("address moved to %s", again.Status.Addresses[0].Value)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReconcileAddressesAndPolicies checks what the controller does with
// spec.addresses (the requested address from the pool; one in no pool
// not usable; an unsupported type not accepted, and no address taken for
// either) and that it writes a BackendTLSPolicy's ancestor status next to
// another controller's.
func TestReconcileAddressesAndPolicies(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	port := gwv1.PortNumber(80)
	listeners := []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: port}}
	hostname := gwv1.HostnameAddressType
	gateway := func(name string, addrs ...gwv1.GatewaySpecAddress) *gwv1.Gateway {
		return &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Generation: 1},
			Spec: gwv1.GatewaySpec{GatewayClassName: "membrane", Listeners: listeners, Addresses: addrs}}
	}
	other := gwv1.PolicyAncestorStatus{AncestorRef: gwv1.ParentReference{Name: "elsewhere"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}}}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithStatusSubresource(&gwv1.GatewayClass{}, &gwv1.Gateway{}, &gwv1.HTTPRoute{}, &gwv1.BackendTLSPolicy{}).
		WithObjects(
			&gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "membrane"}, Spec: gwv1.GatewayClassSpec{ControllerName: translate.ControllerName}},
			gateway("static", gwv1.GatewaySpecAddress{Value: "10.0.0.15"}),
			gateway("outside", gwv1.GatewaySpecAddress{Value: "192.0.2.1"}),
			gateway("named", gwv1.GatewaySpecAddress{Type: &hostname, Value: "gw.example.com"}),
			&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default", Generation: 1},
				Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "static"}}},
					Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "secure", Port: &port}}}}}}}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: "default"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 80}}}},
			&gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "default", Generation: 3},
				Spec: gwv1.BackendTLSPolicySpec{
					TargetRefs: []gwv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "secure"}}},
					Validation: gwv1.BackendTLSPolicyValidation{Hostname: "secure.example.com",
						CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: "missing"}}}},
				Status: gwv1.PolicyStatus{Ancestors: []gwv1.PolicyAncestorStatus{other}}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
			&v1alpha1.MembraneLoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
				Spec: v1alpha1.LoadBalancerIPPoolSpec{Blocks: []v1alpha1.LoadBalancerIPBlock{{Start: "10.0.0.10", Stop: "10.0.0.20"}}}},
		).Build()
	r := New(slog.New(slog.DiscardHandler), c, Config{})
	ctx := context.Background()
	if _, err := r.Reconcile(ctx, workItem()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		name, address, cond, reason string
		status                      metav1.ConditionStatus
	}{
		{"static", "10.0.0.15", "Programmed", "Programmed", metav1.ConditionTrue},
		{"outside", "", "Programmed", "AddressNotUsable", metav1.ConditionFalse},
		{"named", "", "Accepted", "UnsupportedAddress", metav1.ConditionFalse},
	} {
		var gw gwv1.Gateway
		must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: want.name}, &gw))
		var got string
		if len(gw.Status.Addresses) > 0 {
			got = gw.Status.Addresses[0].Value
		}
		cond := meta.FindStatusCondition(gw.Status.Conditions, want.cond)
		if got != want.address || cond == nil || cond.Status != want.status || cond.Reason != want.reason {
			t.Errorf("Gateway %s: address %q, %s %+v; want %q, %s %s", want.name, got, want.cond, cond, want.address, want.status, want.reason)
		}
	}
	var p gwv1.BackendTLSPolicy
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "tls"}, &p))
	if len(p.Status.Ancestors) != 2 || p.Status.Ancestors[0].ControllerName != "example.com/other" {
		t.Fatalf("policy ancestors %+v: want the other controller's entry kept, then ours", p.Status.Ancestors)
	}
	ours := p.Status.Ancestors[1]
	acc := meta.FindStatusCondition(ours.Conditions, "Accepted")
	res := meta.FindStatusCondition(ours.Conditions, "ResolvedRefs")
	if ours.AncestorRef.Name != "static" || acc == nil || acc.Reason != "NoValidCACertificate" || acc.ObservedGeneration != 3 ||
		res == nil || res.Reason != "InvalidCACertificateRef" {
		t.Errorf("our ancestor status %+v: want Gateway static, Accepted False NoValidCACertificate of generation 3, ResolvedRefs False InvalidCACertificateRef", ours)
	}

	// Without the route the policy reaches no Gateway of Membrane's: our
	// entry goes, the other controller's stays.
	must(t, c.Delete(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default"}}))
	if _, err := r.Reconcile(ctx, workItem()); err != nil {
		t.Fatal(err)
	}
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "tls"}, &p))
	if len(p.Status.Ancestors) != 1 || p.Status.Ancestors[0].ControllerName != "example.com/other" {
		t.Errorf("policy ancestors %+v: want only the other controller's entry", p.Status.Ancestors)
	}
}

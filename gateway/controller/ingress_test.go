package controller

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// TestReconcileIngresses: dedicated Ingresses get an address each, shared
// ones one together, an Ingress of another class none; a missing Service
// is one Warning Event, not repeated on the next pass.
func TestReconcileIngresses(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	class := "membrane"
	ing := func(name, mode string, classes ...string) *networkingv1.Ingress {
		i := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
			Annotations: map[string]string{translate.ModeAnnotation: mode}}}
		i.Spec.IngressClassName = &class
		if len(classes) > 0 {
			i.Spec.IngressClassName = &classes[0]
		}
		i.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
			Name: "missing", Port: networkingv1.ServiceBackendPort{Number: 80}}}
		return i
	}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithStatusSubresource(&gwv1.GatewayClass{}, &networkingv1.Ingress{}).
		WithObjects(
			&networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: class}, Spec: networkingv1.IngressClassSpec{Controller: translate.IngressControllerName}},
			ing("a", "dedicated"), ing("b", "dedicated"), ing("c", "shared"), ing("d", "shared"), ing("e", "dedicated", "other"),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
			&v1alpha1.MembraneLoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
				Spec: v1alpha1.LoadBalancerIPPoolSpec{Blocks: []v1alpha1.LoadBalancerIPBlock{{Start: "10.0.0.10", Stop: "10.0.0.20"}}}},
		).Build()
	r := New(slog.New(slog.DiscardHandler), c, Config{ClassName: "membrane"})
	events := record.NewFakeRecorder(100)
	r.events = events
	ctx := context.Background()
	for range 2 {
		if _, err := r.Reconcile(ctx, workItem()); err != nil {
			t.Fatal(err)
		}
	}
	addr := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		var got networkingv1.Ingress
		must(t, c.Get(ctx, types.NamespacedName{Namespace: "default", Name: n}, &got))
		if lb := got.Status.LoadBalancer.Ingress; len(lb) == 1 {
			addr[n] = lb[0].IP
		}
	}
	if addr["a"] == "" || addr["b"] == "" || addr["c"] == "" || addr["a"] == addr["b"] || addr["a"] == addr["c"] || addr["b"] == addr["c"] {
		t.Errorf("addresses %v: want a, b and the shared c distinct", addr)
	}
	if addr["c"] != addr["d"] {
		t.Errorf("shared c %s and d %s differ", addr["c"], addr["d"])
	}
	if addr["e"] != "" {
		t.Errorf("Ingress of another class got %s", addr["e"])
	}
	close(events.Events)
	n := 0
	for e := range events.Events {
		if !strings.Contains(e, "Service default/missing not found") {
			t.Errorf("event %q", e)
		}
		n++
	}
	if n != 4 {
		t.Errorf("%d events, want 4 (one per Ingress of ours, not repeated)", n)
	}
}

package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestPrintIngresses(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	class := "membrane"
	shop := networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop", UID: "u-shop"}}
	shop.Spec.IngressClassName = &class
	shop.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "shop-v2", Port: networkingv1.ServiceBackendPort{Number: 8080}}}
	shop.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"shop.example.com"}, SecretName: "shop-tls"}}
	shop.Spec.Rules = []networkingv1.IngressRule{{Host: "shop.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
		Paths: []networkingv1.HTTPIngressPath{{Path: "/v1"}, {Path: "/exact"}}}}}}
	shop.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "198.18.0.201"}}
	pending := networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pending", UID: "u-pending",
		Annotations: map[string]string{"kubernetes.io/ingress.class": "membrane"}}}
	pending.Spec.Rules = []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
		Paths: []networkingv1.HTTPIngressPath{{Path: "/"}}}}}}
	events := []corev1.Event{
		{InvolvedObject: corev1.ObjectReference{UID: "u-pending"}, Type: "Warning", Reason: "Invalid", Count: 3,
			LastTimestamp: metav1.NewTime(now.Add(-10 * time.Second)), Message: "no address assigned yet (pool exhausted or not configured)\n"},
		{InvolvedObject: corev1.ObjectReference{UID: "u-shop"}, Type: "Warning", Reason: "Invalid", Count: 1,
			LastTimestamp: metav1.NewTime(now.Add(-2 * time.Minute)), Message: "Service shop/nowhere not found"},
		{InvolvedObject: corev1.ObjectReference{UID: "u-gone"}, Type: "Warning", Reason: "Invalid", Message: "of an Ingress deleted since"},
	}

	var out bytes.Buffer
	if err := printIngresses(&out, []networkingv1.Ingress{shop, pending}, events, now); err != nil {
		t.Fatal(err)
	}
	want := `
INGRESS       CLASS     ADDRESS       PROGRAMMED                  RULES
shop/shop     membrane  198.18.0.201  True (Programmed)           shop.example.com (TLS) 2 paths, default shop-v2:8080
shop/pending  membrane  none          False (AddressNotAssigned)  * 1 paths
shop/shop: Warning Invalid (2m0s ago): Service shop/nowhere not found
shop/pending: Warning Invalid (10s ago, 3 times): no address assigned yet (pool exhausted or not configured)
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if err := printIngresses(&out, nil, events, now); err != nil || out.Len() != 0 {
		t.Errorf("no Ingresses: printed %q, %v", out.String(), err)
	}
}

// The Gateways' and the Ingresses' tables share their first columns: name,
// class, address, Programmed.
func TestGatewayAndIngressTablesAlign(t *testing.T) {
	gw := gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "gw"}}
	ing := networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "ing"}}
	var gws, ings bytes.Buffer
	if err := printGateways(&gws, []gwv1.Gateway{gw}); err != nil {
		t.Fatal(err)
	}
	if err := printIngresses(&ings, []networkingv1.Ingress{ing}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	first := func(b bytes.Buffer) []string {
		return strings.Fields(strings.Split(strings.TrimSpace(b.String()), "\n")[0])[1:4]
	}
	if g, i := first(gws), first(ings); !slices.Equal(g, i) {
		t.Errorf("Gateway columns %v, Ingress columns %v", g, i)
	}
}

func TestListIngresses(t *testing.T) {
	c := fake.NewClientset(
		&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop", UID: types.UID("u")}},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop.1"}, Type: "Warning",
			InvolvedObject: corev1.ObjectReference{Kind: "Ingress", UID: "u"}, Message: "Service shop/nowhere not found"},
	)
	ings, evs, err := listIngresses(t.Context(), c)
	if err != nil || len(ings) != 1 || len(evs) != 1 {
		t.Fatalf("listIngresses: %d ingresses, %d events, %v", len(ings), len(evs), err)
	}
	empty, evs, err := listIngresses(t.Context(), fake.NewClientset())
	if err != nil || empty != nil || evs != nil {
		t.Errorf("no Ingresses: %v %v %v", empty, evs, err)
	}

	// A user who may list the Ingresses but not the Events gets the
	// Ingresses; one who may not list the Ingresses gets Forbidden, which
	// status reports and goes on.
	forbid := func(c *fake.Clientset, resource string) {
		c.PrependReactor("list", resource, func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "", errors.New("RBAC"))
		})
	}
	c = fake.NewClientset(&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop"}})
	forbid(c, "events")
	if ings, evs, err := listIngresses(t.Context(), c); err != nil || len(ings) != 1 || evs != nil {
		t.Errorf("events forbidden: %d ingresses, %v events, %v; want the Ingress, no events", len(ings), evs, err)
	}
	forbid(c, "ingresses")
	if _, _, err := listIngresses(t.Context(), c); !apierrors.IsForbidden(err) {
		t.Errorf("ingresses forbidden: %v, want Forbidden", err)
	}
}

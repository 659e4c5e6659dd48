package main

import (
	"bytes"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestPrintGateways(t *testing.T) {
	ok := gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 2}}
	ok.Spec.GatewayClassName = "membrane"
	ok.Spec.Listeners = []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80}}
	ok.Status.Addresses = []gwv1.GatewayStatusAddress{{Value: "198.18.0.200"}}
	ok.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: "True", Reason: "Programmed", ObservedGeneration: 2}}
	ok.Status.Listeners = []gwv1.ListenerStatus{{Name: "http", AttachedRoutes: 3}}
	bad := gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "none", Generation: 1}}
	bad.Spec.GatewayClassName = "membrane"
	bad.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: "False", Reason: "AddressNotAssigned", Message: "pool exhausted", ObservedGeneration: 1}}

	var out bytes.Buffer
	if err := printGateways(&out, []gwv1.Gateway{ok, bad}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"shop/web   membrane  198.18.0.200  True (Programmed)",
		"http HTTP/80 (3 routes)",
		"shop/none  membrane  none          False (AddressNotAssigned): pool exhausted",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := printGateways(&out, nil); err != nil || out.Len() != 0 {
		t.Errorf("no Gateways: printed %q, %v", out.String(), err)
	}
}

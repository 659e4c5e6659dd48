package translate

import (
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestOwnedIngresses: which Ingresses are Membrane's (class name, legacy
// annotation, default class) and their modes (annotation over class
// default, Membrane's annotation over Cilium's, unknown ones reported).
func TestOwnedIngresses(t *testing.T) {
	mine, other := "membrane", "other"
	classes := []networkingv1.IngressClass{
		{ObjectMeta: metav1.ObjectMeta{Name: mine, Annotations: map[string]string{ModeAnnotation: ModeShared}},
			Spec: networkingv1.IngressClassSpec{Controller: IngressControllerName}},
		{ObjectMeta: metav1.ObjectMeta{Name: other, Annotations: map[string]string{defaultClassAnnotation: "true"}},
			Spec: networkingv1.IngressClassSpec{Controller: "example.com/other"}},
	}
	ing := func(name string, class *string, ann map[string]string) networkingv1.Ingress {
		return networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Annotations: ann},
			Spec: networkingv1.IngressSpec{IngressClassName: class}}
	}
	ings := []networkingv1.Ingress{
		ing("a-class", &mine, nil),
		ing("b-legacy", nil, map[string]string{legacyClassAnnotation: mine, CiliumModeAnnotation: ModeDedicated}),
		ing("c-noclass", nil, nil), // the default class is another controller's
		ing("d-other", &other, nil),
		ing("e-both", &mine, map[string]string{ModeAnnotation: ModeShared, CiliumModeAnnotation: ModeDedicated}),
		ing("f-bad", &mine, map[string]string{ModeAnnotation: "both"}),
	}
	got := map[string]string{}
	for _, o := range OwnedIngresses(classes, ings) {
		got[o.Ingress.Name] = o.Mode + "/" + o.Key.String()
		if (o.Problem != "") != (o.Ingress.Name == "f-bad") {
			t.Errorf("%s: problem %q", o.Ingress.Name, o.Problem)
		}
	}
	want := map[string]string{
		"a-class":  "shared//ingress:shared",
		"b-legacy": "dedicated/ns/ingress:b-legacy",
		"e-both":   "shared//ingress:shared",
		"f-bad":    "shared//ingress:shared",
	}
	if len(got) != len(want) {
		t.Errorf("owned %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
}

func TestGatewayDuration(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      bool
	}{
		{"0s", "0s", false}, {"90s", "1m30s", false}, {"1h0m0.25s", "1h250ms", false}, {"500ms", "500ms", false},
		{"1500us", "", true}, {"-1s", "", true}, {"100000h", "", true},
	} {
		d, err := time.ParseDuration(c.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := gatewayDuration(d)
		if string(got) != c.want || (err != nil) != c.err {
			t.Errorf("gatewayDuration(%s) = %q, %v; want %q (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}

func TestHostCovers(t *testing.T) {
	for _, c := range []struct {
		tls, host string
		want      bool
	}{
		{"a.example.com", "a.example.com", true}, {"a.example.com", "b.example.com", false},
		{"*.example.com", "a.example.com", true}, {"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false}, {"*.example.com", "*.example.com", true},
	} {
		if got := hostCovers(c.tls, c.host); got != c.want {
			t.Errorf("hostCovers(%s, %s) = %v", c.tls, c.host, got)
		}
	}
}

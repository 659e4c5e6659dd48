package controller

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// TestSyncCopies runs the controller against a fake API and checks the
// copies in the secrets namespace: exactly the Secrets of Membrane's
// Gateway listeners (cross-namespace only with a ReferenceGrant) and the
// ConfigMaps of the BackendTLSPolicies of its routes' backends, their
// needed keys only; updated with their source, deleted when the grant,
// the source or the reference goes; a changed copy is put back, a stale
// one deleted, other objects of the namespace left alone.
func TestSyncCopies(t *testing.T) {
	const ns = "membrane-secrets"
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	ref := func(ns, name string) gwv1.SecretObjectReference {
		r := gwv1.SecretObjectReference{Name: gwv1.ObjectName(name)}
		if ns != "" {
			r.Namespace = ptr(gwv1.Namespace(ns))
		}
		return r
	}
	https := func(name string, port gwv1.PortNumber, r gwv1.SecretObjectReference) gwv1.Listener {
		return gwv1.Listener{Name: gwv1.SectionName(name), Protocol: gwv1.HTTPSProtocolType, Port: port,
			TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{r}}}
	}
	tlsSecret := func(ns, name, crt string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": []byte(crt), "tls.key": []byte("key of " + name), "ca.crt": []byte("not copied")}}
	}
	policy := func(name, svc, cm string) *gwv1.BackendTLSPolicy {
		return &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: gwv1.BackendTLSPolicySpec{
				TargetRefs: []gwv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: gwv1.ObjectName(svc)}}},
				Validation: gwv1.BackendTLSPolicyValidation{Hostname: "secure.example.com",
					CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: gwv1.ObjectName(cm)}}}}}
	}
	port := gwv1.PortNumber(443)
	stale := synced.Secret(tlsSecret("gone", "old", "x"), ns)
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithStatusSubresource(&gwv1.GatewayClass{}, &gwv1.Gateway{}, &gwv1.HTTPRoute{}, &gwv1.BackendTLSPolicy{}).
		WithObjects(
			&gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "membrane"}, Spec: gwv1.GatewayClassSpec{ControllerName: translate.ControllerName}},
			&gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gwv1.GatewayClassSpec{ControllerName: "example.com/other"}},
			&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: gwv1.GatewaySpec{GatewayClassName: "membrane",
				Listeners: []gwv1.Listener{https("own", 443, ref("", "shop-tls")), https("granted", 8443, ref("certs", "wild")), https("denied", 9443, ref("private", "key"))}}},
			&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "foreign", Namespace: "shop"}, Spec: gwv1.GatewaySpec{GatewayClassName: "other",
				Listeners: []gwv1.Listener{https("own", 443, ref("", "foreign-tls"))}}},
			&gwv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Name: "shop-gateways", Namespace: "certs"}, Spec: gwv1beta1.ReferenceGrantSpec{
				From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "Gateway", Namespace: "shop"}},
				To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Secret"}}}},
			tlsSecret("shop", "shop-tls", "chain v1"), tlsSecret("certs", "wild", "wild chain"), tlsSecret("private", "key", "private chain"),
			tlsSecret("shop", "foreign-tls", "foreign"), tlsSecret("shop", "unreferenced", "unreferenced"),
			&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "shop"},
				Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "web"}}},
					Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "secure", Port: &port}}}}}}}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: "shop"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "idle", Namespace: "shop"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
			policy("secure", "secure", "ca"), policy("idle", "idle", "idle-ca"),
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "shop"}, Data: map[string]string{"ca.crt": "ca v1", "other": "not copied"}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "idle-ca", Namespace: "shop"}, Data: map[string]string{"ca.crt": "idle"}},
			stale,
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "not-a-copy", Namespace: ns}, Data: map[string][]byte{"x": []byte("y")}},
		).Build()
	r := New(slog.New(slog.DiscardHandler), c, Config{SecretsNamespace: ns})
	ctx := context.Background()
	reconcile := func() {
		t.Helper()
		if _, err := r.Reconcile(ctx, workItem()); err != nil {
			t.Fatal(err)
		}
	}
	// copies are the copies' names and content: tls.crt and tls.key of
	// Secrets, ca.crt of ConfigMaps.
	copies := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		var ss corev1.SecretList
		var cms corev1.ConfigMapList
		must(t, c.List(ctx, &ss, client.InNamespace(ns)))
		must(t, c.List(ctx, &cms, client.InNamespace(ns)))
		for _, s := range ss.Items {
			out["Secret "+s.Name] = strings.Join([]string{string(s.Data["tls.crt"]), string(s.Data["tls.key"]),
				s.Labels[synced.LabelNamespace] + "/" + s.Annotations[synced.AnnotationName], string(s.Type),
				strings.Join(slices.Sorted(maps.Keys(s.Data)), ",")}, " ")
		}
		for _, cm := range cms.Items {
			out["ConfigMap "+cm.Name] = strings.Join([]string{cm.Data["ca.crt"],
				cm.Labels[synced.LabelNamespace] + "/" + cm.Annotations[synced.AnnotationName],
				strings.Join(slices.Sorted(maps.Keys(cm.Data)), ",")}, " ")
		}
		return out
	}
	check := func(step string, want map[string]string) {
		t.Helper()
		if d := cmp.Diff(want, copies()); d != "" {
			t.Errorf("%s: copies in %s (-want +got):\n%s", step, ns, d)
		}
	}

	reconcile()
	want := map[string]string{
		"Secret shop.shop-tls": "chain v1 key of shop-tls shop/shop-tls kubernetes.io/tls tls.crt,tls.key",
		"Secret certs.wild":    "wild chain key of wild certs/wild kubernetes.io/tls tls.crt,tls.key",
		"Secret not-a-copy":    "  /  x", // not a copy: left alone
		"ConfigMap shop.ca":    "ca v1 shop/ca ca.crt",
	}
	check("first pass", want)

	// The source changes: so does the copy.
	var src corev1.Secret
	must(t, c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "shop-tls"}, &src))
	src.Data["tls.crt"] = []byte("chain v2")
	must(t, c.Update(ctx, &src))
	reconcile()
	want["Secret shop.shop-tls"] = "chain v2 key of shop-tls shop/shop-tls kubernetes.io/tls tls.crt,tls.key"
	check("after the source changed", want)

	// A copy changed in place is put back.
	var cp corev1.ConfigMap
	must(t, c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "shop.ca"}, &cp))
	cp.Data["ca.crt"] = "tampered"
	must(t, c.Update(ctx, &cp))
	reconcile()
	check("after a copy was changed", want)

	// The grant goes: the cross-namespace copy goes.
	must(t, c.Delete(ctx, &gwv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Name: "shop-gateways", Namespace: "certs"}}))
	reconcile()
	delete(want, "Secret certs.wild")
	check("after the ReferenceGrant was deleted", want)

	// The source goes: its copy goes.
	must(t, c.Delete(ctx, &src))
	reconcile()
	delete(want, "Secret shop.shop-tls")
	check("after the source was deleted", want)

	// The route goes: the policy reaches no backend of Membrane's, its CA
	// is no longer copied.
	must(t, c.Delete(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "shop"}}))
	reconcile()
	delete(want, "ConfigMap shop.ca")
	check("after the route was deleted", want)
}

func ptr[T any](v T) *T { return &v }

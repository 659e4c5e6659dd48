package controller

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/gateway/translate"
)

func certRef(name string, ns, kind *string) gwv1.SecretObjectReference {
	ref := gwv1.SecretObjectReference{Name: gwv1.ObjectName(name)}
	if ns != nil {
		ref.Namespace = ptr(gwv1.Namespace(*ns))
	}
	if kind != nil {
		ref.Kind = ptr(gwv1.Kind(*kind))
	}
	return ref
}

// The objects of the tests below: a Gateway with certificates and client
// CA certificates in its own namespace and in another and a backend client
// certificate in another, an Ingress with a
// TLS Secret, a
// BackendTLSPolicy with a CA ConfigMap; references to other kinds.
func dataReferrers() []client.Object {
	other, cmKind := "certs", "ConfigMap"
	return []client.Object{
		&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "app"}, Spec: gwv1.GatewaySpec{Listeners: []gwv1.Listener{
			{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80},
			{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 443, TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{
				certRef("site", nil, nil), certRef("shared", &other, nil), certRef("site", nil, nil), certRef("not-a-secret", nil, &cmKind),
			}}},
		}, TLS: &gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{
			Default: gwv1.TLSConfig{Validation: &gwv1.FrontendTLSValidation{CACertificateRefs: []gwv1.ObjectReference{
				{Kind: "ConfigMap", Name: "client-ca"}, {Kind: "Secret", Name: "not-a-configmap"},
			}}},
			PerPort: []gwv1.TLSPortConfig{{Port: 8443, TLS: gwv1.TLSConfig{Validation: &gwv1.FrontendTLSValidation{CACertificateRefs: []gwv1.ObjectReference{
				{Kind: "ConfigMap", Name: "partner-ca", Namespace: ptr(gwv1.Namespace(other))}, {Kind: "ConfigMap", Name: "client-ca"},
			}}}}},
		}, Backend: &gwv1.GatewayBackendTLS{ClientCertificateRef: ptr(certRef("backend-client", &other, nil))}}}},
		&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "ing", Namespace: "app"}, Spec: networkingv1.IngressSpec{
			TLS: []networkingv1.IngressTLS{{SecretName: "legacy"}, {Hosts: []string{"no.secret"}}},
		}},
		&gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app"}, Spec: gwv1.BackendTLSPolicySpec{
			Validation: gwv1.BackendTLSPolicyValidation{CACertificateRefs: []gwv1.LocalObjectReference{
				{Kind: "ConfigMap", Name: "ca"}, {Kind: "Secret", Name: "not-a-configmap"},
			}},
		}},
	}
}

// TestDataRefIndexes: each referring kind is indexed by the Secrets or
// ConfigMaps it names, once each; references to other kinds are not
// indexed.
func TestDataRefIndexes(t *testing.T) {
	objs := dataReferrers()
	for _, c := range []struct {
		index client.IndexerFunc
		obj   client.Object
		want  []string
	}{
		{gatewaySecrets, objs[0], []string{"app/site", "certs/backend-client", "certs/shared"}},
		{gatewayConfigMaps, objs[0], []string{"app/client-ca", "certs/partner-ca"}},
		{ingressSecrets, objs[1], []string{"app/legacy"}},
		{policyConfigMaps, objs[2], []string{"app/ca"}},
	} {
		if got := c.index(c.obj); !slices.Equal(got, c.want) {
			t.Errorf("%T: indexed %v, want %v", c.obj, got, c.want)
		}
		// Another kind is not indexed.
		if got := c.index(&corev1.Service{}); got != nil {
			t.Errorf("%T's index of a Service: %v, want nothing", c.obj, got)
		}
	}
}

func dataClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, gwv1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	b := fake.NewClientBuilder().WithScheme(scheme)
	for _, r := range secretReferrers() {
		b = b.WithIndex(r.obj, secretRefIndex, r.index)
	}
	for _, r := range configMapReferrers() {
		b = b.WithIndex(r.obj, configMapRefIndex, r.index)
	}
	return b.WithObjects(append(dataReferrers(), objs...)...).Build()
}

// TestDataEvents: a Secret or ConfigMap reconciles when a Gateway, an
// Ingress or a BackendTLSPolicy refers to it, or when it is a copy in the
// copies' namespace; any other does not.
func TestDataEvents(t *testing.T) {
	c := dataClient(t)
	log := slog.New(slog.DiscardHandler)
	secrets := handler.EnqueueRequestsFromMapFunc(dataEvents(log, c, secretRefIndex, secretReferrers(), "membrane-secrets"))
	cms := handler.EnqueueRequestsFromMapFunc(dataEvents(log, c, configMapRefIndex, configMapReferrers(), "membrane-secrets"))
	secret := func(ns, name string, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, Type: corev1.SecretTypeTLS}
	}
	cm := func(ns, name string, labels map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	}
	copyLabels := map[string]string{synced.LabelKind: "Secret"}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		send func(queue)
		want bool
	}{
		{"Gateway's certificate", updateEvent(ctx, secrets, secret("app", "site", nil), secret("app", "site", nil)), true},
		{"Gateway's certificate in another namespace", createEvent(ctx, secrets, secret("certs", "shared", nil)), true},
		{"Ingress's certificate", deleteEvent(ctx, secrets, secret("app", "legacy", nil)), true},
		{"unreferenced Secret", updateEvent(ctx, secrets, secret("app", "webhook-cert", nil), secret("app", "webhook-cert", nil)), false},
		{"same name, other namespace", createEvent(ctx, secrets, secret("other", "site", nil)), false},
		{"copy of a Secret", deleteEvent(ctx, secrets, secret("membrane-secrets", "app-site", copyLabels)), true},
		{"unlabelled Secret in the copies' namespace", createEvent(ctx, secrets, secret("membrane-secrets", "x", nil)), false},
		{"BackendTLSPolicy's CA", updateEvent(ctx, cms, cm("app", "ca", nil), cm("app", "ca", nil)), true},
		{"Gateway's client CA", createEvent(ctx, cms, cm("app", "client-ca", nil)), true},
		{"Gateway's client CA in another namespace", deleteEvent(ctx, cms, cm("certs", "partner-ca", nil)), true},
		{"kube-root-ca.crt", updateEvent(ctx, cms, cm("app", "kube-root-ca.crt", nil), cm("app", "kube-root-ca.crt", nil)), false},
		{"copy of a ConfigMap", createEvent(ctx, cms, cm("membrane-secrets", "app-ca", map[string]string{synced.LabelKind: "ConfigMap"})), true},
	} {
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		tc.send(q)
		if got := q.Len() == 1; got != tc.want {
			t.Errorf("%s: enqueued %v (queue length %d), want %v", tc.name, got, q.Len(), tc.want)
		}
		q.ShutDown()
	}
}

// TestReferencedData: the input gets the referenced Secrets and ConfigMaps
// that exist, and no other.
func TestReferencedData(t *testing.T) {
	tlsSecret := func(ns, name string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS}
	}
	c := dataClient(t,
		tlsSecret("app", "site"), tlsSecret("app", "legacy"), tlsSecret("app", "unreferenced"), // certs/shared is missing
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ca"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "client-ca"}}, // certs/partner-ca is missing
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "kube-root-ca.crt"}},
	)
	objs := dataReferrers()
	in := translate.Input{
		Gateways:           []gwv1.Gateway{*objs[0].(*gwv1.Gateway)},
		Ingresses:          []networkingv1.Ingress{*objs[1].(*networkingv1.Ingress)},
		BackendTLSPolicies: []gwv1.BackendTLSPolicy{*objs[2].(*gwv1.BackendTLSPolicy)},
	}
	if err := referencedData(context.Background(), c, &in); err != nil {
		t.Fatal(err)
	}
	var secrets, cms []string
	for _, s := range in.Secrets {
		secrets = append(secrets, s.Namespace+"/"+s.Name)
	}
	for _, cm := range in.ConfigMaps {
		cms = append(cms, cm.Namespace+"/"+cm.Name)
	}
	if want := []string{"app/legacy", "app/site"}; !slices.Equal(secrets, want) {
		t.Errorf("secrets %v, want %v", secrets, want)
	}
	if want := []string{"app/ca", "app/client-ca"}; !slices.Equal(cms, want) {
		t.Errorf("configmaps %v, want %v", cms, want)
	}
}

// TestTrimConfigMap: the cache keeps a ConfigMap's ca.crt only (a copy's
// binary data too) and no managed fields.
func TestTrimConfigMap(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	for _, c := range []struct {
		name       string
		in         *corev1.ConfigMap
		data       map[string]string
		binaryData bool
	}{
		{"CA bundle", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{ManagedFields: managed},
			Data: map[string]string{translate.CACertKey: "PEM", "app.yaml": "big"}, BinaryData: map[string][]byte{"blob": {1}}},
			map[string]string{translate.CACertKey: "PEM"}, false},
		{"application configuration", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{ManagedFields: managed},
			Data: map[string]string{"app.yaml": "big"}}, nil, false},
		{"copy", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{synced.LabelKind: "ConfigMap"}},
			Data: map[string]string{translate.CACertKey: "PEM"}, BinaryData: map[string][]byte{"tampered": {1}}},
			map[string]string{translate.CACertKey: "PEM"}, true},
	} {
		out, err := TrimConfigMap(c.in)
		if err != nil {
			t.Fatal(err)
		}
		cm := out.(*corev1.ConfigMap)
		if cm.ManagedFields != nil || len(cm.Data) != len(c.data) || cm.Data[translate.CACertKey] != c.data[translate.CACertKey] || (len(cm.BinaryData) > 0) != c.binaryData {
			t.Errorf("%s: trimmed to data %v, binary data %v, managed fields %v", c.name, cm.Data, cm.BinaryData, cm.ManagedFields)
		}
	}
	// Other objects pass as they are.
	s := &corev1.Secret{}
	if out, _ := TrimConfigMap(s); out != s {
		t.Errorf("a Secret came out as %v", out)
	}
}

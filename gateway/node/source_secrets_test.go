package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/mesh/k8s"
)

// TestSourceReadsOnlyCopies checks the Source's view of Secrets and
// ConfigMaps: the copies in the secrets namespace, under their sources'
// names; not the sources themselves, nor other objects of that namespace.
func TestSourceReadsOnlyCopies(t *testing.T) {
	const ns = "membrane-secrets"
	src := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("chain"), "tls.key": []byte("key")}}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "uncopied"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("x"), "tls.key": []byte("y")}}
	cmSrc := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ca"}, Data: map[string]string{"ca.crt": "pem"}}
	client := fake.NewClientset(src, other, cmSrc,
		synced.Secret(src, ns), synced.ConfigMap(cmSrc, ns),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unlabelled"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "plain"}, Data: map[string]string{"ca.crt": "x"}})
	kinds := map[schema.GroupVersionResource]string{}
	for _, r := range []struct{ version, resource, kind string }{
		{"v1", "gatewayclasses", "GatewayClassList"}, {"v1", "gateways", "GatewayList"}, {"v1", "httproutes", "HTTPRouteList"},
		{"v1", "grpcroutes", "GRPCRouteList"}, {"v1beta1", "referencegrants", "ReferenceGrantList"}, {"v1", "backendtlspolicies", "BackendTLSPolicyList"},
	} {
		kinds[gatewayResource(r.version, r.resource)] = r.kind
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds)
	inf := k8s.NewInformers(client, dyn)
	s, err := NewSource(slog.New(slog.DiscardHandler), inf, client.Discovery(), ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer func() { cancel(); inf.Shutdown() }()
	inf.Start(ctx)
	if !inf.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
	in, _, err := s.Input()
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Secrets) != 1 || in.Secrets[0].Namespace != "shop" || in.Secrets[0].Name != "web-tls" || string(in.Secrets[0].Data["tls.key"]) != "key" {
		t.Errorf("Secrets %+v: want the copy of shop/web-tls only, under its source's name", in.Secrets)
	}
	if len(in.ConfigMaps) != 1 || in.ConfigMaps[0].Namespace != "shop" || in.ConfigMaps[0].Name != "ca" || in.ConfigMaps[0].Data["ca.crt"] != "pem" {
		t.Errorf("ConfigMaps %+v: want the copy of shop/ca only, under its source's name", in.ConfigMaps)
	}
	// What the informers asked the API for: Secrets and ConfigMaps of the
	// secrets namespace only.
	for _, a := range client.Actions() {
		if r := a.GetResource().Resource; (r == "secrets" || r == "configmaps") && a.GetNamespace() != ns {
			t.Errorf("%s %s in namespace %q: want only %s", a.GetVerb(), r, a.GetNamespace(), ns)
		}
	}
}

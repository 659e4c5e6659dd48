package k8s

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// TestServiceSourceRemoteSlices checks that remote slices join a service's
// own, are replaced per cluster, and leave with DropCluster; and that a
// malformed cluster-mesh annotation is reported and counts as absent.
func TestServiceSourceRemoteSlices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake.NewClientset(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo", Annotations: map[string]string{
			clustermesh.CiliumAnnotationGlobal: "true", clustermesh.AnnotationAffinity: "nearest",
		}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.5", Ports: []corev1.ServicePort{{Port: 80}}},
	})
	inf := NewInformers(client, dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()))
	var skipped []string
	src, err := NewServiceSource(slog.New(slog.NewTextHandler(io.Discard, nil)), inf, func(kind string, _ error) { skipped = append(skipped, kind) })
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	src.OnAnnotationProblem(func(s *corev1.Service, err error) { problems = append(problems, s.Name+": "+err.Error()) })
	runCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		inf.Shutdown()
	}()
	inf.Start(runCtx)
	if !inf.WaitForSync(ctx) {
		t.Fatal("not synced")
	}
	id := model.ServiceID{Namespace: "demo", Name: "echo"}
	st := src.state(id)
	if st.Service == nil || st.Service.Mesh != (model.Global{Global: true, Shared: true, Affinity: model.AffinityNone}) {
		t.Fatalf("service mesh settings = %+v", st.Service)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], `"nearest"`) || len(skipped) != 1 || skipped[0] != "ServiceAnnotation" {
		t.Errorf("problems %q, skipped %q; want the affinity reported once", problems, skipped)
	}
	slice := func(name string) model.EndpointSlice {
		return model.EndpointSlice{Name: name, Service: id, Endpoints: []model.Endpoint{{Ready: true}}}
	}
	src.SetRemoteSlices("west", id, []model.EndpointSlice{slice("a"), slice("b")})
	src.SetRemoteSlices("north", id, []model.EndpointSlice{slice("a")})
	src.SetRemoteSlices("west", id, []model.EndpointSlice{slice("c")})
	got := map[string]bool{}
	for _, s := range src.state(id).Slices {
		got[s.Cluster+"/"+s.Name] = true
	}
	if len(got) != 2 || !got["west/c"] || !got["north/a"] {
		t.Errorf("slices after replace = %v, want west/c and north/a", got)
	}
	src.DropCluster("west")
	if s := src.state(id).Slices; len(s) != 1 || s[0].Cluster != "north" {
		t.Errorf("slices after DropCluster(west) = %+v", s)
	}
	src.SetRemoteSlices("north", id, nil)
	if s := src.state(id).Slices; len(s) != 0 {
		t.Errorf("slices after north offers none = %+v", s)
	}
}

// TestRemotePolicy checks that a remote cluster's pods get the identity
// whose labels carry that cluster, and that pods without one are left out.
func TestRemotePolicy(t *testing.T) {
	idObj := func(name string, labels map[string]string) runtime.Object {
		l := map[string]any{}
		for k, v := range labels {
			l[k] = v
		}
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "membrane.io/v1alpha1", "kind": "MembraneIdentity",
			"metadata": map[string]any{"name": name}, "securityLabels": l,
		}}
	}
	clientLabels := map[string]string{
		"k8s:app": "client", identity.NamespaceLabel: "demo", identity.ServiceAccount: "default",
		identity.ClusterLabel: "east", identity.MembraneClusterLabel: "east",
	}
	pod := func(name, app, ip string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: "east-node1"}, Status: corev1.PodStatus{PodIP: ip}}
	}
	rp, err := remotePolicy("east", identity.DefaultFilter(),
		[]*corev1.Pod{pod("client", "client", "10.1.0.5"), pod("new", "new", "10.1.0.6")},
		[]*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}},
		[]runtime.Object{idObj("65792", clientLabels)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.Pods) != 1 || rp.Pods[0].Name != "client" || rp.Pods[0].Identity != 65792 || rp.Pods[0].Cluster != "east" || rp.Pods[0].Node != "east/east-node1" {
		t.Errorf("pods = %+v", rp.Pods)
	}
	if len(rp.Identities) != 1 || rp.Identities[0].ID != 65792 {
		t.Errorf("identities = %+v", rp.Identities)
	}
}

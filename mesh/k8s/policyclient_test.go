package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/mesh/policy/convert"
)

// TestTypeMetaScan: apiVersion and kind read quickly where the JSON is as
// the API server writes it, as json.DefaultMetaFactory reads them always.
func TestTypeMetaScan(t *testing.T) {
	mnp := schema.GroupVersionKind{Group: "membrane.io", Version: "v1alpha1", Kind: "MembraneNetworkPolicy"}
	list := mnp.GroupVersion().WithKind("MembraneNetworkPolicyList")
	status := schema.GroupVersionKind{Version: "v1", Kind: "Status"}
	for _, tc := range []struct {
		name string
		data string
		fast bool // read by typeMetaScan
		want schema.GroupVersionKind
	}{
		{"server order", `{"apiVersion":"membrane.io/v1alpha1","kind":"MembraneNetworkPolicy","metadata":{"name":"a"},"specs":[{"kind":"x"}]}`, true, mnp},
		{"kind first, spaces", ` { "kind" : "MembraneNetworkPolicy" ,
			"apiVersion":"membrane.io/v1alpha1","spec":{}}`, true, mnp},
		{"scalars before", `{"code":410,"ok":true,"none":null,"apiVersion":"v1","kind":"Status","details":{"kind":"x"}}`, true, status},
		{"list, kind after items", `{"apiVersion":"membrane.io/v1alpha1","items":[{"apiVersion":"v9","kind":"Other","s":"a\"}{["}],"kind":"MembraneNetworkPolicyList","metadata":{}}`, true, list},
		{"nested only", `{"metadata":{"kind":"Other"},"apiVersion":"membrane.io/v1alpha1","kind":"MembraneNetworkPolicy"}`, true, mnp},
		{"watch envelope", `{"type":"MODIFIED","object":{"apiVersion":"membrane.io/v1alpha1","kind":"MembraneNetworkPolicy","x":[1,2,{"y":"}"}]}}`, true, schema.GroupVersionKind{}},
		{"empty", `{}`, true, schema.GroupVersionKind{}},
		{"escaped kind", `{"apiVersion":"membrane.io/v1alpha1","kind":"Membrane\u004eetworkPolicy"}`, false, mnp},
		{"key in other case", `{"ApiVersion":"membrane.io/v1alpha1","KIND":"MembraneNetworkPolicy"}`, false, mnp},
		{"kind not a string", `{"apiVersion":"membrane.io/v1alpha1","kind":3}`, false, schema.GroupVersionKind{}},
		{"cut short", `{"apiVersion":"membrane.io/v1alpha1","metadata":{"name":"a"`, false, schema.GroupVersionKind{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, ok := typeMetaScan([]byte(tc.data))
			if ok != tc.fast {
				t.Errorf("read quickly: %v, want %v", ok, tc.fast)
			}
			got, err := leadingTypeMeta{}.Interpret([]byte(tc.data))
			want, werr := jsonserializer.DefaultMetaFactory.Interpret([]byte(tc.data))
			if (err != nil) != (werr != nil) {
				t.Fatalf("Interpret error %v; the default's %v", err, werr)
			}
			if err == nil && (*got != *want || *got != tc.want) {
				t.Errorf("Interpret: %v; the default's %v, want %v", *got, *want, tc.want)
			}
		})
	}
}

// apiJSON is obj as the API server writes it: through a map, so with
// sorted keys (apiVersion and kind first).
func apiJSON(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testMNP(gen int64, ports ...string) *v1alpha1.MembraneNetworkPolicy {
	p := &v1alpha1.MembraneNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: convert.KindMembraneNetworkPolicy},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Generation: gen, ResourceVersion: fmt.Sprint(gen)},
		Spec: &v1alpha1.Rule{
			EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		},
	}
	for _, port := range ports {
		proto := v1alpha1.ProtoTCP
		if port == "icmp" {
			port, proto = "80", "ICMP"
		}
		p.Spec.Ingress = append(p.Spec.Ingress, v1alpha1.IngressRule{
			IngressCommonRule: v1alpha1.IngressCommonRule{FromEndpoints: []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "client"}}}},
			ToPorts:           []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: port, Protocol: proto}}}},
		})
	}
	return p
}

// fakePolicyServer serves membrane.io's policies: lists with the objects
// given, watches with the events sent on events.
func fakePolicyServer(t *testing.T, mnps []runtime.Object, events <-chan []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resource := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		kind := map[string]string{networkPolicies: "MembraneNetworkPolicyList", clusterwidePolicies: "MembraneClusterwideNetworkPolicyList"}[resource]
		if kind == "" || !strings.HasPrefix(r.URL.Path, "/apis/membrane.io/v1alpha1/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") != "true" {
			items := []json.RawMessage{}
			if resource == networkPolicies {
				for _, o := range mnps {
					items = append(items, apiJSON(t, o))
				}
			}
			b, _ := json.Marshal(map[string]any{"apiVersion": "membrane.io/v1alpha1", "kind": kind, "metadata": map[string]any{"resourceVersion": "1"}, "items": items})
			_, _ = w.Write(b)
			return
		}
		w.(http.Flusher).Flush()
		for {
			var ev []byte
			if resource == networkPolicies {
				select {
				case ev = <-events:
				case <-r.Context().Done():
					return
				}
			} else {
				<-r.Context().Done()
				return
			}
			_, _ = w.Write(append(ev, '\n'))
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func watchEvent(t testing.TB, typ string, obj runtime.Object) []byte {
	b, err := json.Marshal(map[string]any{"type": typ, "object": json.RawMessage(apiJSON(t, obj))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPolicySourceTypedClient: with a membrane.io client, the policy source
// reads policies in their Go types and converts them as through the
// dynamic client: valid versions are in force, an invalid one is reported
// (the field at fault named) with the last valid version kept, a deletion
// removes the policy.
func TestPolicySourceTypedClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := make(chan []byte)
	v1 := testMNP(1, "80")
	srv := fakePolicyServer(t, []runtime.Object{v1}, events)
	rc, err := NewMembraneClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		membraneResource(identities): "MembraneIdentityList",
	})
	inf := NewInformers(fake.NewClientset(), dyn)
	inf.Membrane = rc
	var skippedKinds []string
	src, err := NewPolicySource(slog.New(slog.DiscardHandler), inf, identity.DefaultFilter(), func(kind string, _ error) { skippedKinds = append(skippedKinds, kind) })
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		inf.Shutdown()
	}()
	inf.Start(runCtx)
	if !inf.WaitForSync(ctx) {
		t.Fatal("not synced")
	}
	key := policyKey(convert.KindMembraneNetworkPolicy, "ns", "web")
	wantPolicy := func(p *v1alpha1.MembraneNetworkPolicy) []policy.Policy {
		want, errs := convert.FromMembranePolicy(p)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return []policy.Policy{want}
	}
	// waitFor polls the source until cond holds.
	waitFor := func(what string, cond func(PolicyState) bool) {
		t.Helper()
		for {
			st, err := src.State()
			if err != nil {
				t.Fatal(err)
			}
			if cond(st) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %+v, invalid %v", what, st.Policies, src.Invalid())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitFor("the listed policy", func(st PolicyState) bool { return reflect.DeepEqual(st.Policies, wantPolicy(v1)) })

	v2 := testMNP(2, "80", "8080")
	events <- watchEvent(t, "MODIFIED", v2)
	waitFor("the changed policy", func(st PolicyState) bool { return reflect.DeepEqual(st.Policies, wantPolicy(v2)) })

	bad := testMNP(3, "80", "icmp")
	events <- watchEvent(t, "MODIFIED", bad)
	waitFor("the invalid version reported", func(PolicyState) bool { return src.Invalid()[key] != "" })
	if why := src.Invalid()[key]; !strings.Contains(why, "spec.ingress[1].toPorts[0].ports[0].protocol") {
		t.Errorf("invalid policy: %q does not name the field at fault", why)
	}
	if st, _ := src.State(); !reflect.DeepEqual(st.Policies, wantPolicy(v2)) {
		t.Errorf("after an invalid version: %+v, want the last valid one", st.Policies)
	}
	if len(skippedKinds) != 1 || skippedKinds[0] != convert.KindMembraneNetworkPolicy {
		t.Errorf("skipped: %v, want one %s", skippedKinds, convert.KindMembraneNetworkPolicy)
	}

	events <- watchEvent(t, "DELETED", bad)
	waitFor("the policy deleted", func(st PolicyState) bool { return len(st.Policies) == 0 && len(src.Invalid()) == 0 })
}

// BenchmarkDecodePolicyEvent decodes a watch event of a 250-rule policy
// into what the policy source converts: through the membrane.io client's
// codec (typed) and as the dynamic client does (unstructured, then
// converted to the Go type).
func BenchmarkDecodePolicyEvent(b *testing.B) {
	p := testMNP(1)
	for j := range 250 {
		p.Spec.Ingress = append(p.Spec.Ingress, v1alpha1.IngressRule{
			IngressCommonRule: v1alpha1.IngressCommonRule{FromEndpoints: []metav1.LabelSelector{{MatchLabels: map[string]string{"group": fmt.Sprint("g", j%100)}}}},
			ToPorts:           []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: fmt.Sprint(10000 + j), Protocol: v1alpha1.ProtoTCP}}}},
		})
	}
	data := apiJSON(b, p)
	b.Logf("%d bytes", len(data))
	b.Run("typed", func(b *testing.B) {
		scheme := runtime.NewScheme()
		if err := v1alpha1.AddToScheme(scheme); err != nil {
			b.Fatal(err)
		}
		dec := newTypedCodecs(scheme).info.Serializer
		for b.Loop() {
			obj, _, err := dec.Decode(data, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := obj.(*v1alpha1.MembraneNetworkPolicy); !ok {
				b.Fatalf("decoded %T", obj)
			}
		}
	})
	b.Run("unstructured", func(b *testing.B) {
		for b.Loop() {
			obj, _, err := unstructured.UnstructuredJSONScheme.Decode(data, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			var mnp v1alpha1.MembraneNetworkPolicy
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, &mnp); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPolicySourcePodCache: the pods' conversions are kept between States
// only while the pod and its namespace are the same objects: a relabeled
// pod, a relabeled namespace and a deleted pod show in the next State.
func TestPolicySourcePodCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: map[string]string{"team": "a"}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web"}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.5"},
	}
	client := fake.NewClientset(ns, pod)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		membraneResource(identities):          "MembraneIdentityList",
		membraneResource(networkPolicies):     "MembraneNetworkPolicyList",
		membraneResource(clusterwidePolicies): "MembraneClusterwideNetworkPolicyList",
	})
	inf := NewInformers(client, dyn)
	src, err := NewPolicySource(slog.New(slog.DiscardHandler), inf, identity.DefaultFilter(), func(string, error) {})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		inf.Shutdown()
	}()
	inf.Start(runCtx)
	if !inf.WaitForSync(ctx) {
		t.Fatal("not synced")
	}
	waitFor := func(what string, cond func([]Pod) bool) {
		t.Helper()
		for {
			st, err := src.State()
			if err != nil {
				t.Fatal(err)
			}
			if cond(st.Pods) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: pods %+v", what, st.Pods)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	label := func(pods []Pod, k string) string {
		if len(pods) != 1 {
			return "<no pod>"
		}
		return pods[0].Labels[k]
	}
	waitFor("the pod", func(p []Pod) bool {
		return label(p, "k8s:app") == "web" && label(p, identity.NamespaceLabelsPre+"team") == "a"
	})
	// Twice the same: from the cache.
	waitFor("the pod again", func(p []Pod) bool { return label(p, "k8s:app") == "web" })

	pod = pod.DeepCopy()
	pod.Labels["app"] = "api"
	if _, err := client.CoreV1().Pods("ns").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the pod relabeled", func(p []Pod) bool { return label(p, "k8s:app") == "api" })

	ns = ns.DeepCopy()
	ns.Labels["team"] = "b"
	if _, err := client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the namespace relabeled", func(p []Pod) bool { return label(p, identity.NamespaceLabelsPre+"team") == "b" })

	if err := client.CoreV1().Pods("ns").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the pod deleted", func(p []Pod) bool { return len(p) == 0 })
}

// TestTypeMetaScanRandom compares Interpret with json.DefaultMetaFactory's
// on random objects: nested values, strings with quotes, brackets and
// escapes, apiVersion and kind anywhere or absent.
func TestTypeMetaScanRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	strs := []string{"a", `q"uote`, `back\slash`, "{[", "]}", "v1", "membrane.io/v1alpha1", "ü", "x,y:z", ""}
	var value func(depth int) any
	value = func(depth int) any {
		switch k := rnd.IntN(7); {
		case k == 0 && depth < 4:
			m := map[string]any{}
			for range rnd.IntN(4) {
				m[strs[rnd.IntN(len(strs))]+fmt.Sprint(rnd.IntN(3))] = value(depth + 1)
			}
			if rnd.IntN(3) == 0 {
				m["kind"] = strs[rnd.IntN(len(strs))]
			}
			return m
		case k == 1 && depth < 4:
			var l []any
			for range rnd.IntN(4) {
				l = append(l, value(depth+1))
			}
			return l
		case k == 2:
			return rnd.IntN(1000) - 500
		case k == 3:
			return rnd.IntN(2) == 0
		case k == 4:
			return nil
		default:
			return strs[rnd.IntN(len(strs))]
		}
	}
	fast := 0
	for i := range 3000 {
		obj := map[string]any{}
		for range rnd.IntN(5) {
			obj[fmt.Sprint("f", rnd.IntN(10))] = value(0)
		}
		if rnd.IntN(4) > 0 {
			obj["apiVersion"] = []any{"membrane.io/v1alpha1", "v1", "a/b/c", 3}[rnd.IntN(4)]
		}
		if rnd.IntN(4) > 0 {
			obj["kind"] = strs[rnd.IntN(len(strs))]
		}
		data, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if rnd.IntN(2) == 0 {
			// Another key order than encoding/json's.
			var v map[string]json.RawMessage
			_ = json.Unmarshal(data, &v)
			var b strings.Builder
			b.WriteString("{ ")
			first := true
			for k, raw := range v {
				if !first {
					b.WriteString(" ,\n")
				}
				first = false
				kb, _ := json.Marshal(k)
				b.Write(kb)
				b.WriteString(" : ")
				b.Write(raw)
			}
			b.WriteString(" }")
			data = []byte(b.String())
		}
		if _, _, ok := typeMetaScan(data); ok {
			fast++
		}
		got, err := leadingTypeMeta{}.Interpret(data)
		want, werr := jsonserializer.DefaultMetaFactory.Interpret(data)
		if (err != nil) != (werr != nil) || (err == nil && *got != *want) {
			t.Fatalf("object %d %s: Interpret %v, %v; the default's %v, %v", i, data, got, err, want, werr)
		}
	}
	if fast < 1000 {
		t.Errorf("only %d of 3000 read quickly", fast)
	}
}

package node

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestTypedReusesConversions checks that an object whose resourceVersion
// did not change is not converted again, that a new resourceVersion is,
// and that a deleted object's conversion is dropped.
func TestTypedReusesConversions(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	route := func(name, uid, rv, hostname string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("gateway.networking.k8s.io/v1")
		u.SetKind("HTTPRoute")
		u.SetNamespace("ns")
		u.SetName(name)
		u.SetUID(types.UID(uid))
		u.SetResourceVersion(rv)
		if err := unstructured.SetNestedStringSlice(u.Object, []string{hostname}, "spec", "hostnames"); err != nil {
			t.Fatal(err)
		}
		return u
	}
	must(t, idx.Add(route("a", "uid-a", "1", "a.example")))
	must(t, idx.Add(route("b", "uid-b", "1", "b.example")))
	l := cache.NewGenericLister(idx, schema.GroupResource{Group: gwv1.GroupName, Resource: "httproutes"})

	hostnames := func(rs []gwv1.HTTPRoute) map[string]string {
		out := map[string]string{}
		for _, r := range rs {
			out[r.Name] = string(r.Spec.Hostnames[0])
		}
		return out
	}
	var prev map[types.UID]convertedObject
	next := map[types.UID]convertedObject{}
	got, err := typed[gwv1.HTTPRoute](l, prev, next)
	must(t, err)
	if h := hostnames(got); h["a"] != "a.example" || h["b"] != "b.example" || len(next) != 2 {
		t.Fatalf("first pass: %v, %d conversions kept", h, len(next))
	}

	// a changes its content but not its resourceVersion (which the API
	// server never does): the kept conversion shows it was reused. b gets
	// a new version and is converted again.
	must(t, idx.Update(route("a", "uid-a", "1", "changed.example")))
	must(t, idx.Update(route("b", "uid-b", "2", "b2.example")))
	prev, next = next, map[types.UID]convertedObject{}
	got, err = typed[gwv1.HTTPRoute](l, prev, next)
	must(t, err)
	if h := hostnames(got); h["a"] != "a.example" || h["b"] != "b2.example" {
		t.Fatalf("second pass: %v, want a reused (a.example) and b converted again (b2.example)", h)
	}

	// a is deleted: its conversion is not kept.
	must(t, idx.Delete(route("a", "uid-a", "1", "a.example")))
	prev, next = next, map[types.UID]convertedObject{}
	got, err = typed[gwv1.HTTPRoute](l, prev, next)
	must(t, err)
	if _, ok := next["uid-a"]; ok || len(got) != 1 || len(next) != 1 {
		t.Fatalf("after delete: %d routes, conversions %v", len(got), next)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

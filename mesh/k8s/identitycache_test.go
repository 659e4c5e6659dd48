package k8s

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// TestIdentityCache: the cache converts as identityIndexOf does, a
// replaced object (the informer's update) is converted again, and a
// removed one is gone.
func TestIdentityCache(t *testing.T) {
	obj := func(name, app string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "membrane.io/v1alpha1", "kind": "MembraneIdentity",
			"metadata": map[string]any{"name": name}, "securityLabels": map[string]any{"k8s:app": app},
		}}
	}
	a, b, bad := obj("300", "a"), obj("301", "b"), obj("x", "c")
	var c identityCache
	check := func(step string, objs ...runtime.Object) {
		t.Helper()
		want, wantErr := identityIndexOf(objs)
		got, err := c.index(objs)
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(identityIndex{})); diff != "" {
			t.Errorf("%s (-identityIndexOf +cache):\n%s", step, diff)
		}
		if (err == nil) != (wantErr == nil) {
			t.Errorf("%s: error %v, want %v", step, err, wantErr)
		}
	}
	check("first", a, b, bad)
	if len(c.byName) != 3 {
		t.Errorf("cache holds %d objects, want 3", len(c.byName))
	}
	b2 := obj("301", "b2")
	check("301 replaced", a, b2)
	if got, _ := c.index([]runtime.Object{a, b2}); got.byKey[identity.Labels{"k8s:app": "b2"}.Key()] != 301 {
		t.Errorf("replaced identity not converted again: %v", got.byKey)
	}
	if _, ok := c.byName["x"]; ok || len(c.byName) != 2 {
		t.Errorf("removed object still cached: %v", c.byName)
	}
	if got, _ := c.index([]runtime.Object{a}); len(got.list) != 1 || got.list[0].ID != 300 {
		t.Errorf("index: %v", got.list)
	}
}

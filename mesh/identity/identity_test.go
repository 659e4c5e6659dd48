package identity

import (
	"context"
	"fmt"
	"testing"
)

type memStore struct {
	ids     map[ID]Labels
	created int
}

func (m *memStore) Create(_ context.Context, id ID, l Labels) error {
	if _, ok := m.ids[id]; ok {
		return ErrExists
	}
	m.ids[id] = l
	m.created++
	return nil
}

func (m *memStore) Delete(_ context.Context, id ID) error {
	delete(m.ids, id)
	return nil
}

func TestForPod(t *testing.T) {
	l := DefaultFilter().ForPod(map[string]string{"app": "web", "pod-template-hash": "abc123"}, "shop", map[string]string{"team": "a"}, "")
	want := Labels{
		"k8s:app":                                 "web",
		"k8s:io.kubernetes.pod.namespace":         "shop",
		"k8s:io.cilium.k8s.namespace.labels.team": "a",
		"k8s:io.cilium.k8s.policy.serviceaccount": "default",
	}
	if l.Key() != want.Key() {
		t.Fatalf("got %v\nwant %v", l, want)
	}
	// Replicas of one workload share their labels.
	other := DefaultFilter().ForPod(map[string]string{"app": "web", "pod-template-hash": "def456"}, "shop", map[string]string{"team": "a"}, "default")
	if other.Key() != l.Key() {
		t.Fatal("replicas with different pod-template-hash got different labels")
	}
}

func TestAllocator(t *testing.T) {
	ctx := context.Background()
	store := &memStore{ids: map[ID]Labels{MinCluster: {"k8s:app": "old"}}}
	a := NewAllocator(store)
	a.Observe(MinCluster, Labels{"k8s:app": "old"})
	web := Labels{"k8s:app": "web"}
	id, err := a.Allocate(ctx, web)
	if err != nil || id != MinCluster+1 {
		t.Fatalf("allocate: %d, %v", id, err)
	}
	if again, _ := a.Allocate(ctx, Labels{"k8s:app": "web"}); again != id || store.created != 1 {
		t.Fatalf("same labels got %d (created %d times)", again, store.created)
	}
	// A number taken in the store (by an earlier leader) is skipped.
	store.ids[MinCluster+2] = Labels{"k8s:app": "foreign"}
	db, err := a.Allocate(ctx, Labels{"k8s:app": "db"})
	if err != nil || db != MinCluster+3 {
		t.Fatalf("allocate past a taken number: %d, %v", db, err)
	}
	released, err := a.Release(ctx, map[string]bool{web.Key(): true})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(released) != fmt.Sprint([]ID{MinCluster, MinCluster + 3}) {
		t.Fatalf("released %v", released)
	}
	if _, ok := a.Lookup(Labels{"k8s:app": "db"}); ok {
		t.Fatal("released identity still known")
	}
	if _, ok := store.ids[MinCluster+2]; !ok {
		t.Fatal("an identity the allocator never owned was released")
	}
}

func TestClusterIdentities(t *testing.T) {
	lo, hi := ClusterRange(0)
	if lo != MinCluster || hi != MaxCluster {
		t.Errorf("ClusterRange(0) = %d-%d", lo, hi)
	}
	lo, hi = ClusterRange(2)
	if lo != 2<<16|256 || hi != 2<<16|65535 || ClusterOf(lo) != 2 || ClusterOf(hi) != 2 {
		t.Errorf("ClusterRange(2) = %d-%d", lo, hi)
	}
	f := DefaultFilter()
	f.Cluster = "east"
	l := f.ForPod(map[string]string{"app": "client"}, "demo", nil, "")
	if l[ClusterLabel] != "east" || l[MembraneClusterLabel] != "east" {
		t.Errorf("labels %v: want the cluster under %s and %s", l, ClusterLabel, MembraneClusterLabel)
	}
	if l := DefaultFilter().ForPod(map[string]string{"app": "client"}, "demo", nil, ""); l[ClusterLabel] != "" {
		t.Errorf("no cluster: labels %v", l)
	}
}

func TestClusterAllocator(t *testing.T) {
	a := NewClusterAllocator(&memStore{ids: map[ID]Labels{}}, 3)
	id, err := a.Allocate(context.Background(), Labels{"k8s:app": "x"})
	if err != nil || id != 3<<16|MinCluster {
		t.Errorf("Allocate = %d, %v; want %d", id, err, 3<<16|MinCluster)
	}
}

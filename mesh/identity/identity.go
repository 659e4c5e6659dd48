// Package identity derives security labels from pods and allocates a numeric
// security identity per distinct set of them, as Cilium does.
package identity

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// ID is a numeric security identity.
type ID uint32

// Reserved identities (Cilium's numbering, so policies and tools agree).
const (
	Host          ID = 1
	World         ID = 2
	Unmanaged     ID = 3
	Health        ID = 4
	Init          ID = 5
	RemoteNode    ID = 6
	KubeAPIServer ID = 7
)

// The range of identities allocated for endpoints of this cluster.
const (
	MinCluster ID = 256
	MaxCluster ID = 65535
)

// Reserved returns the name of a reserved identity ("" if id is not one).
func Reserved(id ID) string {
	switch id {
	case Host:
		return "host"
	case World:
		return "world"
	case Unmanaged:
		return "unmanaged"
	case Health:
		return "health"
	case Init:
		return "init"
	case RemoteNode:
		return "remote-node"
	case KubeAPIServer:
		return "kube-apiserver"
	}
	return ""
}

// Labels are security labels keyed "source:key".
type Labels map[string]string

// Key is the canonical form of a label set: equal sets have equal keys.
func (l Labels) Key() string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(l[k])
		b.WriteByte(';')
	}
	return b.String()
}

// Label keys Membrane adds, with the "k8s:" source.
const (
	source             = "k8s:"
	NamespaceLabel     = source + "io.kubernetes.pod.namespace"
	ServiceAccount     = source + "io.cilium.k8s.policy.serviceaccount"
	NamespaceLabelsPre = source + "io.cilium.k8s.namespace.labels."
	// ClusterLabel and MembraneClusterLabel name the cluster of an
	// endpoint in a cluster mesh (Cilium's key, and Membrane's alias).
	ClusterLabel         = source + "io.cilium.k8s.policy.cluster"
	MembraneClusterLabel = source + "io.membrane.cluster"
)

// Filter decides which pod labels are security relevant.
type Filter struct {
	// Exclude lists label keys (exact) or prefixes (ending in "*") that do
	// not make an identity.
	Exclude []string
	// Cluster, in a cluster mesh, is the endpoints' cluster: their labels
	// carry it (ClusterLabel and MembraneClusterLabel). Empty: no cluster
	// label.
	Cluster string
}

// DefaultFilter leaves out labels that differ between replicas of one
// workload or change on every rollout.
func DefaultFilter() Filter {
	return Filter{Exclude: []string{
		"pod-template-hash",
		"controller-revision-hash",
		"pod-template-generation",
		"statefulset.kubernetes.io/pod-name",
		"apps.kubernetes.io/pod-index",
		"controller-uid",
		"batch.kubernetes.io/controller-uid",
		"job-name",
		"batch.kubernetes.io/job-name",
		"batch.kubernetes.io/job-completion-index",
	}}
}

func (f Filter) excluded(key string) bool {
	for _, e := range f.Exclude {
		if strings.HasSuffix(e, "*") && strings.HasPrefix(key, strings.TrimSuffix(e, "*")) || key == e {
			return true
		}
	}
	return false
}

// ForPod returns the security labels of a pod: its labels (filtered), its
// namespace, its namespace's labels and its service account.
func (f Filter) ForPod(podLabels map[string]string, namespace string, nsLabels map[string]string, serviceAccount string) Labels {
	l := Labels{NamespaceLabel: namespace}
	for k, v := range podLabels {
		if !f.excluded(k) {
			l[source+k] = v
		}
	}
	for k, v := range nsLabels {
		l[NamespaceLabelsPre+k] = v
	}
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	l[ServiceAccount] = serviceAccount
	if f.Cluster != "" {
		l[ClusterLabel] = f.Cluster
		l[MembraneClusterLabel] = f.Cluster
	}
	return l
}

// ClusterRange is the range of endpoint identities a cluster allocates: in
// a cluster mesh the cluster id is in bits 16-23 (as Cilium encodes it), so
// identities of connected clusters never collide; id 0 is the range
// MinCluster-MaxCluster.
func ClusterRange(clusterID uint8) (lo, hi ID) {
	base := ID(clusterID) << 16
	return base | MinCluster, base | MaxCluster
}

// ClusterOf is the cluster id encoded in an endpoint identity.
func ClusterOf(id ID) uint8 { return uint8(id >> 16) }

// Store persists identities (as MembraneIdentity objects).
type Store interface {
	// Create stores a new identity; ErrExists if the number is taken.
	Create(ctx context.Context, id ID, labels Labels) error
	Delete(ctx context.Context, id ID) error
}

// ErrExists means the identity number is already stored.
var ErrExists = errors.New("identity already exists")

// Allocator hands out one identity per label set, lowest free number first.
// One allocator (the leader-elected operator) allocates for the cluster.
type Allocator struct {
	store  Store
	lo, hi ID

	mu    sync.Mutex
	byKey map[string]ID
	byID  map[ID]Labels
}

// NewAllocator returns an allocator persisting through store.
func NewAllocator(store Store) *Allocator {
	return NewClusterAllocator(store, 0)
}

// NewClusterAllocator returns an allocator of cluster clusterID's range
// (ClusterRange).
func NewClusterAllocator(store Store, clusterID uint8) *Allocator {
	lo, hi := ClusterRange(clusterID)
	return &Allocator{store: store, lo: lo, hi: hi, byKey: map[string]ID{}, byID: map[ID]Labels{}}
}

// Observe records an identity that exists in the store (at start, or created
// by an earlier leader).
func (a *Allocator) Observe(id ID, labels Labels) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old, ok := a.byID[id]; ok {
		delete(a.byKey, old.Key())
	}
	a.byID[id] = labels
	a.byKey[labels.Key()] = id
}

// Forget drops an identity deleted from the store.
func (a *Allocator) Forget(id ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l, ok := a.byID[id]; ok {
		delete(a.byKey, l.Key())
		delete(a.byID, id)
	}
}

// Lookup returns the identity of a label set, if allocated.
func (a *Allocator) Lookup(labels Labels) (ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.byKey[labels.Key()]
	return id, ok
}

// Allocate returns the identity of labels, creating it when new.
func (a *Allocator) Allocate(ctx context.Context, labels Labels) (ID, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.byKey[labels.Key()]; ok {
		return id, nil
	}
	for id := a.lo; id <= a.hi; id++ {
		if _, used := a.byID[id]; used {
			continue
		}
		err := a.store.Create(ctx, id, labels)
		if errors.Is(err, ErrExists) {
			// Created meanwhile (by an earlier leader): not ours to reuse.
			a.byID[id] = nil
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("allocate identity for %s: %w", labels.Key(), err)
		}
		a.byID[id] = labels
		a.byKey[labels.Key()] = id
		return id, nil
	}
	return 0, fmt.Errorf("allocate identity for %s: all %d identities in use", labels.Key(), a.hi-a.lo+1)
}

// Release deletes identities whose label sets are not in use.
func (a *Allocator) Release(ctx context.Context, inUse map[string]bool) (released []ID, err error) {
	a.mu.Lock()
	var victims []ID
	for id, l := range a.byID {
		if l != nil && !inUse[l.Key()] {
			victims = append(victims, id)
		}
	}
	a.mu.Unlock()
	sort.Slice(victims, func(i, j int) bool { return victims[i] < victims[j] })
	var errs []error
	for _, id := range victims {
		if err := a.store.Delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("release identity %d: %w", id, err))
			continue
		}
		a.Forget(id)
		released = append(released, id)
	}
	return released, errors.Join(errs...)
}

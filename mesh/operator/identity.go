// Package operator holds the cluster-wide controllers of membrane-operator.
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/identity"
)

// identityStore keeps identities as MembraneIdentity objects.
type identityStore struct{ c client.Client }

func (s identityStore) Create(ctx context.Context, id identity.ID, labels identity.Labels) error {
	obj := &v1alpha1.MembraneIdentity{
		ObjectMeta:     metav1.ObjectMeta{Name: strconv.FormatUint(uint64(id), 10)},
		SecurityLabels: labels,
	}
	err := s.c.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		return identity.ErrExists
	}
	return err
}

func (s identityStore) Delete(ctx context.Context, id identity.ID) error {
	obj := &v1alpha1.MembraneIdentity{ObjectMeta: metav1.ObjectMeta{Name: strconv.FormatUint(uint64(id), 10)}}
	return client.IgnoreNotFound(s.c.Delete(ctx, obj))
}

// IdentityController allocates a MembraneIdentity for every distinct set of
// pod security labels and deletes identities no pod uses any more.
type IdentityController struct {
	log    *slog.Logger
	c      client.Client
	filter identity.Filter
	alloc  *identity.Allocator
	// GCInterval is how often unused identities are looked for; one is
	// deleted when unused on two looks in a row.
	GCInterval time.Duration

	observeMu sync.Mutex
	observed  bool
}

// NewIdentityController returns the controller; Setup registers it.
// Identities are allocated in the range of clusterID (identity.ClusterRange).
func NewIdentityController(log *slog.Logger, c client.Client, filter identity.Filter, clusterID uint8, gc time.Duration) *IdentityController {
	return &IdentityController{log: log, c: c, filter: filter, alloc: identity.NewClusterAllocator(identityStore{c}, clusterID), GCInterval: gc}
}

// Setup registers the pod reconciler and the garbage collector.
func (r *IdentityController) Setup(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named("identity").
		For(&corev1.Pod{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.podsOfNamespace)).
		Complete(r)
	if err != nil {
		return fmt.Errorf("set up identity controller: %w", err)
	}
	return mgr.Add(ctrlRunnable(r.collectGarbage))
}

// ctrlRunnable adapts a function to a leader-elected manager runnable.
type ctrlRunnable func(ctx context.Context) error

func (f ctrlRunnable) Start(ctx context.Context) error { return f(ctx) }

func (r *IdentityController) podsOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.c.List(ctx, &pods, client.InNamespace(obj.GetName())); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(pods.Items))
	for _, p := range pods.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
	}
	return reqs
}

// observe loads the identities that exist, once, before the first
// allocation, so a label set never gets a second identity.
func (r *IdentityController) observe(ctx context.Context) error {
	r.observeMu.Lock()
	defer r.observeMu.Unlock()
	if r.observed {
		return nil
	}
	var list v1alpha1.MembraneIdentityList
	if err := r.c.List(ctx, &list); err != nil {
		return fmt.Errorf("list identities: %w", err)
	}
	for _, mi := range list.Items {
		n, err := strconv.ParseUint(mi.Name, 10, 32)
		if err != nil {
			continue
		}
		r.alloc.Observe(identity.ID(n), mi.SecurityLabels)
	}
	r.observed = true
	r.log.Info("identities loaded", "count", len(list.Items))
	return nil
}

// Labels returns the security labels of a pod.
func (r *IdentityController) Labels(ctx context.Context, pod *corev1.Pod) (identity.Labels, error) {
	var ns corev1.Namespace
	if err := r.c.Get(ctx, types.NamespacedName{Name: pod.Namespace}, &ns); err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", pod.Namespace, err)
	}
	return r.filter.ForPod(pod.Labels, pod.Namespace, ns.Labels, pod.Spec.ServiceAccountName), nil
}

// Reconcile makes sure the pod's label set has an identity.
func (r *IdentityController) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := r.c.Get(ctx, req.NamespacedName, &pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !needsIdentity(&pod) {
		return reconcile.Result{}, nil
	}
	if err := r.observe(ctx); err != nil {
		return reconcile.Result{}, err
	}
	labels, err := r.Labels(ctx, &pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	id, err := r.alloc.Allocate(ctx, labels)
	if err != nil {
		return reconcile.Result{}, err
	}
	r.log.Debug("pod identity", "pod", req.NamespacedName, "identity", id)
	return reconcile.Result{}, nil
}

// needsIdentity: host-network pods are the host; finished pods need none.
func needsIdentity(p *corev1.Pod) bool {
	return !p.Spec.HostNetwork && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// collectGarbage deletes identities unused on two looks in a row, so that a
// label set that only just appeared keeps its fresh identity.
func (r *IdentityController) collectGarbage(ctx context.Context) error {
	if err := r.observe(ctx); err != nil {
		return err
	}
	t := time.NewTicker(r.GCInterval)
	defer t.Stop()
	var previous map[string]bool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		inUse, err := r.inUse(ctx)
		if err != nil {
			r.log.Warn("identity garbage collection", "error", err)
			continue
		}
		keep := map[string]bool{}
		for k := range inUse {
			keep[k] = true
		}
		for k := range previous {
			keep[k] = true
		}
		previous = inUse
		released, err := r.alloc.Release(ctx, keep)
		if err != nil {
			r.log.Warn("release identities", "error", err)
		}
		for _, id := range released {
			r.log.Info("identity released", "identity", id)
		}
	}
}

// inUse returns the label keys of every pod that needs an identity.
func (r *IdentityController) inUse(ctx context.Context) (map[string]bool, error) {
	var pods corev1.PodList
	if err := r.c.List(ctx, &pods); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := map[string]bool{}
	var errs []error
	for i := range pods.Items {
		p := &pods.Items[i]
		if !needsIdentity(p) {
			continue
		}
		l, err := r.Labels(ctx, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[l.Key()] = true
	}
	if len(errs) > 0 {
		// A partial view must not release anything.
		return nil, errors.Join(errs...)
	}
	return out, nil
}

package k8s

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Informers are the shared informers a process watches the cluster with:
// one typed and one dynamic factory (for Membrane's resources), created
// once, started once and synced in one place.
//
// The pattern: each source takes what it needs from Typed or Dynamic and
// registers its handlers with Watch; then the owner calls Start once and
// WaitForSync once. Whoever needs the initial lists waits for Synced; the
// owner prunes only after WaitForSync (every source has seen everything).
type Informers struct {
	Typed   informers.SharedInformerFactory
	Dynamic dynamicinformer.DynamicSharedInformerFactory
	// Membrane, when set before the sources register, is a client of
	// membrane.io (NewMembraneClient): the policy source reads its large
	// policy objects decoded straight into their Go types rather than
	// through Dynamic.
	Membrane rest.Interface

	mu       sync.Mutex
	handlers []cache.InformerSynced
	synced   chan struct{}
	once     sync.Once
	// own are the informers of Membrane, by resource, run by Start.
	own map[string]cache.SharedIndexInformer
	wg  sync.WaitGroup
}

// NewInformers returns the shared informers of client and dyn (no periodic
// resync: the sources reconcile level-based on their own).
func NewInformers(client kubernetes.Interface, dyn dynamic.Interface) *Informers {
	return &Informers{
		Typed:   informers.NewSharedInformerFactory(client, 0),
		Dynamic: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		synced:  make(chan struct{}),
	}
}

// Watch registers h on inf, one of the factories' informers. WaitForSync
// waits until h has been handed inf's initial list, not just until the list
// is in: a source's state is complete when its handlers have run.
func (i *Informers) Watch(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) error {
	reg, err := inf.AddEventHandler(h)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	i.mu.Lock()
	i.handlers = append(i.handlers, reg.HasSynced)
	i.mu.Unlock()
	return nil
}

// MembraneInformer returns the shared informer of one resource of
// Membrane, decoded into obj's type (list: its list type), made on the
// first call.
func (i *Informers) MembraneInformer(resource string, obj, list runtime.Object) cache.SharedIndexInformer {
	i.mu.Lock()
	defer i.mu.Unlock()
	if inf, ok := i.own[resource]; ok {
		return inf
	}
	if i.own == nil {
		i.own = map[string]cache.SharedIndexInformer{}
	}
	inf := typedInformer(i.Membrane, resource, obj, list)
	i.own[resource] = inf
	return inf
}

// Start starts every informer the sources asked for, until ctx is done.
// Call it once, after every source has registered.
func (i *Informers) Start(ctx context.Context) {
	i.Typed.Start(ctx.Done())
	i.Dynamic.Start(ctx.Done())
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, inf := range i.own {
		i.wg.Go(func() { inf.RunWithContext(ctx) })
	}
}

// WaitForSync blocks until every registered handler has its initial list,
// then closes Synced; it reports false if ctx ends first.
func (i *Informers) WaitForSync(ctx context.Context) bool {
	i.mu.Lock()
	handlers := i.handlers
	i.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), handlers...) {
		return false
	}
	i.once.Do(func() { close(i.synced) })
	return true
}

// Synced is closed once WaitForSync has seen every handler synced.
func (i *Informers) Synced() <-chan struct{} { return i.synced }

// Shutdown stops the informers and waits for their goroutines; call it
// after ctx of Start is done.
func (i *Informers) Shutdown() {
	i.Typed.Shutdown()
	i.Dynamic.Shutdown()
	i.wg.Wait()
}

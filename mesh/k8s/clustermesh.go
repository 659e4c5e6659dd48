package k8s

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// MeshSink takes what remote clusters offer: the endpoint slices of their
// global, shared Services, and their nodes (for routes to their pods).
type MeshSink interface {
	SetRemoteSlices(cluster string, id model.ServiceID, slices []model.EndpointSlice)
	// DropCluster withdraws the cluster's backends and its policy state.
	DropCluster(cluster string)
	SetRemoteNodes(cluster string, nodes []clustermesh.RemoteNode)
	SetRemotePolicy(cluster string, r *RemotePolicy)
}

// MeshConfig configures the cluster-mesh watcher.
type MeshConfig struct {
	// Cluster is this cluster's name: a remote of that name is refused.
	Cluster string
	// Namespace and Secret name the Secret with the remotes' kubeconfigs.
	Namespace, Secret string
	// CacheTTL is how long a remote that stopped answering keeps its
	// backends; HealthInterval how often a remote is probed.
	CacheTTL, HealthInterval time.Duration
	// Filter makes remote pods' security labels (as this cluster's; the
	// remote's name is added as their cluster).
	Filter identity.Filter
}

// Mesh watches the Secret of remote clusters and, per remote, that
// cluster's Services, EndpointSlices and Nodes with its read-only
// credentials.
type Mesh struct {
	log   *slog.Logger
	cfg   MeshConfig
	local kubernetes.Interface
	sink  MeshSink

	mu      sync.Mutex
	remotes map[string]*remote
	// problems are Secret keys that could not be used, by key.
	problems map[string]string
}

// HealthInterval is how often a remote is probed by default with cache
// TTL ttl: a sixth of it, from 1 s to 5 s. A remote that stops answering
// keeps its backends for ttl after its last answer, so for between
// ttl-HealthInterval and ttl after it stopped.
func HealthInterval(ttl time.Duration) time.Duration {
	return max(time.Second, min(5*time.Second, ttl/6))
}

// NewMesh returns a watcher; Run starts it.
func NewMesh(log *slog.Logger, cfg MeshConfig, local kubernetes.Interface, sink MeshSink) *Mesh {
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = HealthInterval(cfg.CacheTTL)
	}
	return &Mesh{log: log, cfg: cfg, local: local, sink: sink, remotes: map[string]*remote{}, problems: map[string]string{}}
}

// Run watches the Secret until ctx is done, then stops every remote.
func (m *Mesh) Run(ctx context.Context) {
	f := informers.NewSharedInformerFactoryWithOptions(m.local, 0, informers.WithNamespace(m.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", m.cfg.Secret).String()
		}))
	inf := f.Core().V1().Secrets().Informer()
	set := func(obj any) {
		if sec, ok := obj.(*corev1.Secret); ok {
			m.apply(ctx, sec.Data)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, o any) { set(o) },
		DeleteFunc: func(any) { m.apply(ctx, nil) },
	})
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	// The datapath and the routes stay as they are while the agent
	// restarts; only the watches stop.
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, r := range m.remotes {
		r.stop()
		delete(m.remotes, name)
	}
}

// apply starts, restarts and stops remotes to match the Secret's data.
func (m *Mesh) apply(ctx context.Context, data map[string][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.problems = map[string]string{}
	for name, r := range m.remotes {
		if kc, ok := data[name]; ok && bytes.Equal(kc, r.kubeconfig) {
			continue
		}
		m.log.Info("disconnecting remote cluster", "cluster", name)
		r.stop()
		delete(m.remotes, name)
		m.sink.DropCluster(name)
		m.sink.SetRemoteNodes(name, nil)
		m.sink.SetRemotePolicy(name, nil)
	}
	if ctx.Err() != nil {
		return
	}
	for name, kc := range data {
		if _, ok := m.remotes[name]; ok {
			continue
		}
		if err := clustermesh.ValidateName(name); err != nil {
			m.problems[name] = err.Error()
			continue
		}
		if name == m.cfg.Cluster {
			m.problems[name] = "a remote cannot have this cluster's name"
			continue
		}
		r, err := m.start(ctx, name, kc)
		if err != nil {
			m.problems[name] = err.Error()
			m.log.Warn("remote cluster not usable", "cluster", name, "error", err)
			continue
		}
		m.log.Info("connecting remote cluster", "cluster", name)
		m.remotes[name] = r
	}
}

// reconnect replaces remote r of name (if still current) by a fresh one
// with the same credentials: new lists, new watches. The old one's
// backends stay withdrawn until the new one has synced.
func (m *Mesh) reconnect(ctx context.Context, name string, old *remote) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.remotes[name] != old || ctx.Err() != nil {
		return
	}
	old.stop()
	r, err := m.start(ctx, name, old.kubeconfig)
	if err != nil {
		delete(m.remotes, name)
		m.problems[name] = err.Error()
		return
	}
	m.remotes[name] = r
}

// Status is the state of every remote.
func (m *Mesh) Status() []clustermesh.RemoteStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []clustermesh.RemoteStatus
	for _, r := range m.remotes {
		out = append(out, r.status())
	}
	for name, p := range m.problems {
		out = append(out, clustermesh.RemoteStatus{Cluster: name, Error: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

// remote is one connected remote cluster.
type remote struct {
	log        *slog.Logger
	name       string
	kubeconfig []byte
	client     kubernetes.Interface
	sink       MeshSink
	ttl        time.Duration
	cancel     context.CancelFunc
	done       chan struct{}

	svcs   cache.SharedIndexInformer
	slices cache.SharedIndexInformer
	nodes  cache.SharedIndexInformer
	// pods, namespaces and identities: the remote's endpoints as policy
	// sees them.
	pods, namespaces, identities cache.SharedIndexInformer
	filter                       identity.Filter
	policyDirty                  chan struct{}

	// recovered is called once the remote answers again after its backends
	// were withdrawn: its watches may be in a long back-off, so the mesh
	// starts them afresh.
	recovered func()

	mu        sync.Mutex
	synced    bool
	withdrawn bool
	lastOK    time.Time
	lastErr   string
	offered   map[model.ServiceID]int // endpoints offered per global service
}

func (m *Mesh) start(ctx context.Context, name string, kubeconfig []byte) (*remote, error) {
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of remote %s: %w", name, err)
	}
	rc.UserAgent = "membrane-agent/clustermesh"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("client of remote %s: %w", name, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("client of remote %s: %w", name, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &remote{
		log: m.log.With("remote", name), name: name, kubeconfig: kubeconfig, client: client, sink: m.sink,
		ttl: m.cfg.CacheTTL, cancel: cancel, done: make(chan struct{}), offered: map[model.ServiceID]int{},
		filter: m.cfg.Filter, policyDirty: make(chan struct{}, 1),
	}
	r.recovered = func() { go m.reconnect(ctx, name, r) }
	f := informers.NewSharedInformerFactory(client, 0)
	r.svcs = f.Core().V1().Services().Informer()
	r.slices = f.Discovery().V1().EndpointSlices().Informer()
	r.nodes = f.Core().V1().Nodes().Informer()
	r.pods = f.Core().V1().Pods().Informer()
	r.namespaces = f.Core().V1().Namespaces().Informer()
	df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	r.identities = df.ForResource(membraneResource(identities)).Informer()
	policyChanged := func(any) {
		select {
		case r.policyDirty <- struct{}{}:
		default:
		}
	}
	svcChanged := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if s, ok := obj.(*corev1.Service); ok {
			r.push(model.ServiceID{Namespace: s.Namespace, Name: s.Name})
		}
	}
	sliceChanged := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
			r.push(model.ServiceID{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]})
		}
	}
	nodesChanged := func(any) { r.pushNodes() }
	for _, reg := range []struct {
		inf cache.SharedIndexInformer
		f   func(any)
	}{{r.svcs, svcChanged}, {r.slices, sliceChanged}, {r.nodes, nodesChanged},
		{r.pods, policyChanged}, {r.namespaces, policyChanged}, {r.identities, policyChanged}} {
		if _, err := reg.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: reg.f, UpdateFunc: func(_, o any) { reg.f(o) }, DeleteFunc: reg.f,
		}); err != nil {
			cancel()
			return nil, fmt.Errorf("watch remote %s: %w", name, err)
		}
	}
	f.Start(rctx.Done())
	df.Start(rctx.Done())
	go func() {
		defer close(r.done)
		defer df.Shutdown()
		defer f.Shutdown()
		if !cache.WaitForCacheSync(rctx.Done(), r.svcs.HasSynced, r.slices.HasSynced, r.nodes.HasSynced,
			r.pods.HasSynced, r.namespaces.HasSynced, r.identities.HasSynced) {
			return
		}
		r.mu.Lock()
		r.synced = true
		r.lastOK = time.Now()
		r.mu.Unlock()
		r.log.Info("remote cluster synced")
		r.pushAll()
		r.pushNodes()
		r.pushPolicy()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.policyLoop(rctx)
		}()
		r.health(rctx, m.cfg.HealthInterval)
		wg.Wait()
	}()
	return r, nil
}

func (r *remote) stop() {
	r.cancel()
	<-r.done
}

// health probes the remote's API server; after ttl without an answer its
// backends are withdrawn, and offered again once it answers.
func (r *remote) health(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, min(every, 5*time.Second))
		_, err := r.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		now := time.Now()
		if err == nil {
			r.lastOK, r.lastErr = now, ""
		} else {
			r.lastErr = err.Error()
		}
		withdraw := err != nil && r.synced && !r.withdrawn && now.Sub(r.lastOK) > r.ttl
		restore := err == nil && r.synced && r.withdrawn
		if withdraw {
			r.withdrawn = true
		}
		r.mu.Unlock()
		switch {
		case withdraw:
			r.log.Warn("remote cluster not answering for longer than the cache TTL: withdrawing its backends", "ttl", r.ttl, "error", err)
			r.sink.DropCluster(r.name)
		case restore:
			r.log.Info("remote cluster answers again: watching it afresh")
			r.recovered()
			return
		}
	}
}

// push hands the sink what the remote offers for service id: the slices of
// a global, shared Service; nothing otherwise.
func (r *remote) push(id model.ServiceID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced || r.withdrawn {
		return
	}
	slices := r.offer(id)
	n := 0
	for _, s := range slices {
		n += len(s.Endpoints)
	}
	if slices == nil {
		delete(r.offered, id)
	} else {
		r.offered[id] = n
	}
	r.sink.SetRemoteSlices(r.name, id, slices)
}

// offer is called with r.mu held.
func (r *remote) offer(id model.ServiceID) []model.EndpointSlice {
	obj, ok, err := r.svcs.GetStore().GetByKey(id.Namespace + "/" + id.Name)
	if err != nil || !ok {
		return nil
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	g, _ := ServiceMesh(svc)
	if !g.Global || !g.Shared {
		return nil
	}
	objs, err := r.slices.GetIndexer().ByIndex(cache.NamespaceIndex, id.Namespace)
	if err != nil {
		return nil
	}
	out := []model.EndpointSlice{}
	for _, o := range objs {
		k, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || k.Labels[discoveryv1.LabelServiceName] != id.Name {
			continue
		}
		if es, ok, _ := EndpointSlice(k); ok {
			out = append(out, es)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// policyLoop hands the sink the remote's policy state after changes, at
// most every 200 ms.
func (r *remote) policyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.policyDirty:
		}
		r.pushPolicy()
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pushPolicy hands the sink the remote's pods and identities.
func (r *remote) pushPolicy() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced || r.withdrawn {
		return
	}
	var pods []*corev1.Pod
	for _, o := range r.pods.GetStore().List() {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	var nss []*corev1.Namespace
	for _, o := range r.namespaces.GetStore().List() {
		if ns, ok := o.(*corev1.Namespace); ok {
			nss = append(nss, ns)
		}
	}
	var ids []runtime.Object
	for _, o := range r.identities.GetStore().List() {
		if u, ok := o.(runtime.Object); ok {
			ids = append(ids, u)
		}
	}
	rp, err := remotePolicy(r.name, r.filter, pods, nss, ids)
	if err != nil {
		r.log.Warn("remote identities skipped", "error", err)
	}
	r.sink.SetRemotePolicy(r.name, &rp)
}

func (r *remote) pushAll() {
	for _, k := range r.svcs.GetStore().ListKeys() {
		ns, name, err := cache.SplitMetaNamespaceKey(k)
		if err == nil {
			r.push(model.ServiceID{Namespace: ns, Name: name})
		}
	}
}

func (r *remote) pushNodes() {
	r.mu.Lock()
	synced := r.synced
	r.mu.Unlock()
	if !synced {
		return
	}
	var out []clustermesh.RemoteNode
	for _, o := range r.nodes.GetStore().List() {
		n, ok := o.(*corev1.Node)
		if !ok {
			continue
		}
		rn := clustermesh.RemoteNode{Name: n.Name, WireGuardKey: n.Annotations[wireguard.AnnotationPublicKey]}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
					rn.IP = ip
					break
				}
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
				rn.PodCIDRs = append(rn.PodCIDRs, p)
			}
		}
		if rn.IP.IsValid() && len(rn.PodCIDRs) > 0 {
			out = append(out, rn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	r.sink.SetRemoteNodes(r.name, out)
}

func (r *remote) status() clustermesh.RemoteStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := clustermesh.RemoteStatus{
		Cluster: r.name, Connected: r.synced && r.lastErr == "", Withdrawn: r.withdrawn,
		LastSync: r.lastOK, Error: r.lastErr, GlobalServices: len(r.offered),
	}
	if r.withdrawn {
		st.GlobalServices = 0
	}
	for _, n := range r.offered {
		if !r.withdrawn {
			st.RemoteEndpoints += n
		}
	}
	if r.synced {
		st.Nodes = len(r.nodes.GetStore().ListKeys())
	}
	if !r.synced && st.Error == "" {
		st.Error = "waiting for the remote's lists"
	}
	return st
}

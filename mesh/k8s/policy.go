package k8s

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersdiscoveryv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/mesh/policy/convert"
)

// Membrane's resources the policy source watches.
const (
	identities          = "membraneidentities"
	networkPolicies     = "membranenetworkpolicies"
	clusterwidePolicies = "membraneclusterwidenetworkpolicies"
)

func membraneResource(name string) schema.GroupVersionResource {
	return v1alpha1.SchemeGroupVersion.WithResource(name)
}

// kubernetesSlices selects the EndpointSlices of the kubernetes Service.
func kubernetesSlices() labels.Selector {
	return labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: "kubernetes"})
}

// PolicyState is everything the node's endpoint policies and ipcache depend
// on, as plain types.
type PolicyState struct {
	// Pods are the cluster's pods with an address of their own (not host
	// network, not finished), sorted by namespace and name.
	Pods []Pod
	// Identities are the allocated endpoint identities, with the named
	// ports of their pods.
	Identities []policy.Identity
	// Policies are the last valid version of every policy object, sorted.
	Policies []policy.Policy
	Nodes    []model.Node
	// APIServer are the addresses of the kubernetes Service's endpoints.
	APIServer []netip.Addr
	// ChangedAt is when the oldest change not yet in a state was seen.
	ChangedAt time.Time
}

// Pod is a pod as policy sees it (the endpoint stage's type).
type Pod = endpoint.Pod

// PolicySource watches everything policy depends on and hands out a
// consistent PolicyState after changes.
type PolicySource struct {
	log     *slog.Logger
	filter  identity.Filter
	skipped Skipped
	changed chan struct{}

	pods       listerscorev1.PodLister
	namespaces listerscorev1.NamespaceLister
	nodes      listerscorev1.NodeLister
	slices     listersdiscoveryv1.EndpointSliceLister
	identities cache.GenericLister

	mu       sync.Mutex
	remote   map[string]RemotePolicy  // cluster mesh: what each remote cluster has
	policies map[string]policy.Policy // last valid version, by kind/namespace/name
	invalid  map[string]string        // objects whose current version is invalid: why
	// reuse is what the next version of each Membrane policy object can
	// reuse of its last valid conversion.
	reuse     map[string]convert.Reuse
	changedAt time.Time

	// idMu guards idCache (State may be called from several goroutines).
	idMu    sync.Mutex
	idCache identityCache
	// podMu guards pods: each pod's conversion, by namespace/name, kept
	// while its object and its namespace's are the same (the informers
	// replace an object that changes).
	podMu    sync.Mutex
	podCache map[string]convertedPod
}

type convertedPod struct {
	obj *corev1.Pod
	ns  *corev1.Namespace
	pod Pod
	ok  bool
	key string // pod.Labels.Key()
}

// NewPolicySource registers its handlers on the shared informers; start and
// sync them, then read State after each signal of Changed.
func NewPolicySource(log *slog.Logger, inf *Informers, filter identity.Filter, skipped Skipped) (*PolicySource, error) {
	factory, dyn := inf.Typed, inf.Dynamic
	s := &PolicySource{
		log: log, filter: filter, skipped: skipped,
		changed:    make(chan struct{}, 1),
		pods:       factory.Core().V1().Pods().Lister(),
		namespaces: factory.Core().V1().Namespaces().Lister(),
		nodes:      factory.Core().V1().Nodes().Lister(),
		slices:     factory.Discovery().V1().EndpointSlices().Lister(),
		identities: dyn.ForResource(membraneResource(identities)).Lister(),
		policies:   map[string]policy.Policy{},
		invalid:    map[string]string{},
		reuse:      map[string]convert.Reuse{},
		remote:     map[string]RemotePolicy{},
	}
	touch := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.touch() },
		UpdateFunc: func(_, _ any) { s.touch() },
		DeleteFunc: func(any) { s.touch() },
	}
	// A status write (the operator's Valid condition) changes no rule.
	onSpec := func(on func(any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc: on,
			UpdateFunc: func(old, o any) {
				if specChanged(old, o) {
					on(o)
				}
			},
			DeleteFunc: s.onPolicyDelete,
		}
	}
	np, mp := onSpec(s.onNetworkPolicy), onSpec(s.onMembranePolicy)
	// Membrane's policies in their Go types where the informers have a
	// membrane.io client (one decoding pass), else as unstructured objects.
	policyInformer := func(resource string, obj, list runtime.Object) cache.SharedIndexInformer {
		if inf.Membrane != nil {
			return inf.MembraneInformer(resource, obj, list)
		}
		return dyn.ForResource(membraneResource(resource)).Informer()
	}
	for _, reg := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{factory.Core().V1().Pods().Informer(), touch},
		{factory.Core().V1().Namespaces().Informer(), touch},
		{factory.Core().V1().Nodes().Informer(), touch},
		{factory.Discovery().V1().EndpointSlices().Informer(), cache.FilteringResourceEventHandler{FilterFunc: isKubernetesSlice, Handler: touch}},
		{dyn.ForResource(membraneResource(identities)).Informer(), touch},
		{factory.Networking().V1().NetworkPolicies().Informer(), np},
		{policyInformer(networkPolicies, &v1alpha1.MembraneNetworkPolicy{}, &v1alpha1.MembraneNetworkPolicyList{}), mp},
		{policyInformer(clusterwidePolicies, &v1alpha1.MembraneClusterwideNetworkPolicy{}, &v1alpha1.MembraneClusterwideNetworkPolicyList{}), mp},
	} {
		// Synced covers the handler's own sync: the initial policies are
		// converted, not just listed, before the first regeneration.
		if err := inf.Watch(reg.inf, reg.h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Changed is signalled (coalesced) after every change.
func (s *PolicySource) Changed() <-chan struct{} { return s.changed }

// Invalid returns the policy objects whose current version is invalid
// (their last valid version, if any, is the one in State), with why.
func (s *PolicySource) Invalid() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.invalid))
	for k, v := range s.invalid {
		out[k] = v
	}
	return out
}

func (s *PolicySource) touch() {
	s.mu.Lock()
	if s.changedAt.IsZero() {
		s.changedAt = time.Now()
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// specChanged: the object's generation moved (or is not kept).
func specChanged(old, cur any) bool {
	o, ok1 := old.(metav1.Object)
	c, ok2 := cur.(metav1.Object)
	return !ok1 || !ok2 || c.GetGeneration() == 0 || o.GetGeneration() != c.GetGeneration()
}

func isKubernetesSlice(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	return ok && sl.Namespace == "default" && kubernetesSlices().Matches(labels.Set(sl.Labels))
}

func policyKey(kind, namespace, name string) string {
	if namespace == "" {
		return kind + "/" + name
	}
	return kind + "/" + namespace + "/" + name
}

// setPolicy keeps p as the object's policy when valid; an invalid version
// leaves the last valid one in force.
func (s *PolicySource) setPolicy(key string, p policy.Policy, errs error) {
	s.mu.Lock()
	if errs != nil {
		s.invalid[key] = errs.Error()
		_, kept := s.policies[key]
		s.mu.Unlock()
		s.skipped(strings.SplitN(key, "/", 2)[0], errs)
		s.log.Warn("invalid policy: the last valid version stays in force", "policy", key, "lastValidKept", kept, "error", errs)
		return
	}
	delete(s.invalid, key)
	s.policies[key] = p
	s.mu.Unlock()
	s.touch()
}

func (s *PolicySource) onNetworkPolicy(obj any) {
	np, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok {
		return
	}
	p, errs := convert.FromNetworkPolicy(np)
	s.setPolicy(policyKey("NetworkPolicy", np.Namespace, np.Name), p, errs.ToAggregate())
}

func (s *PolicySource) onMembranePolicy(obj any) {
	switch o := obj.(type) {
	case *v1alpha1.MembraneNetworkPolicy:
		key := policyKey(convert.KindMembraneNetworkPolicy, o.Namespace, o.Name)
		p, reuse, errs := convert.FromMembranePolicyReusing(o, s.lastReuse(key))
		s.setReuse(key, reuse)
		s.setPolicy(key, p, errs.ToAggregate())
	case *v1alpha1.MembraneClusterwideNetworkPolicy:
		key := policyKey(convert.KindMembraneClusterwideNetworkPolicy, "", o.Name)
		p, reuse, errs := convert.FromMembraneClusterwidePolicyReusing(o, s.lastReuse(key))
		s.setReuse(key, reuse)
		s.setPolicy(key, p, errs.ToAggregate())
	case *unstructured.Unstructured:
		p, err := membranePolicy(o)
		s.setPolicy(policyKey(o.GetKind(), o.GetNamespace(), o.GetName()), p, err)
	}
}

func (s *PolicySource) lastReuse(key string) convert.Reuse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reuse[key]
}

func (s *PolicySource) setReuse(key string, r convert.Reuse) {
	s.mu.Lock()
	s.reuse[key] = r
	s.mu.Unlock()
}

func membranePolicy(u *unstructured.Unstructured) (policy.Policy, error) {
	switch u.GetKind() {
	case "MembraneNetworkPolicy":
		var mnp v1alpha1.MembraneNetworkPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mnp); err != nil {
			return policy.Policy{}, fmt.Errorf("decode: %w", err)
		}
		p, errs := convert.FromMembranePolicy(&mnp)
		return p, errs.ToAggregate()
	case "MembraneClusterwideNetworkPolicy":
		var mcnp v1alpha1.MembraneClusterwideNetworkPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mcnp); err != nil {
			return policy.Policy{}, fmt.Errorf("decode: %w", err)
		}
		p, errs := convert.FromMembraneClusterwidePolicy(&mcnp)
		return p, errs.ToAggregate()
	}
	return policy.Policy{}, fmt.Errorf("unknown kind %q", u.GetKind())
}

func (s *PolicySource) onPolicyDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	var key string
	switch o := obj.(type) {
	case *networkingv1.NetworkPolicy:
		key = policyKey("NetworkPolicy", o.Namespace, o.Name)
	case *v1alpha1.MembraneNetworkPolicy:
		key = policyKey(convert.KindMembraneNetworkPolicy, o.Namespace, o.Name)
	case *v1alpha1.MembraneClusterwideNetworkPolicy:
		key = policyKey(convert.KindMembraneClusterwideNetworkPolicy, "", o.Name)
	case *unstructured.Unstructured:
		key = policyKey(o.GetKind(), o.GetNamespace(), o.GetName())
	default:
		return
	}
	s.mu.Lock()
	delete(s.policies, key)
	delete(s.invalid, key)
	delete(s.reuse, key)
	s.mu.Unlock()
	s.touch()
}

// State reads the current state from the informers' caches.
func (s *PolicySource) State() (PolicyState, error) {
	var st PolicyState
	s.mu.Lock()
	st.ChangedAt, s.changedAt = s.changedAt, time.Time{}
	for _, p := range s.policies {
		st.Policies = append(st.Policies, p)
	}
	var remote []RemotePolicy
	for _, r := range s.remote {
		remote = append(remote, r)
	}
	s.mu.Unlock()
	slices.SortFunc(st.Policies, func(a, b policy.Policy) int {
		return strings.Compare(a.Kind+"/"+a.Namespace+"/"+a.Name, b.Kind+"/"+b.Namespace+"/"+b.Name)
	})

	ids, err := s.identityIndex()
	if err != nil {
		return PolicyState{}, err
	}
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return PolicyState{}, fmt.Errorf("list namespaces: %w", err)
	}
	nsByName := make(map[string]*corev1.Namespace, len(nss))
	for _, ns := range nss {
		nsByName[ns.Name] = ns
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return PolicyState{}, fmt.Errorf("list pods: %w", err)
	}
	s.podMu.Lock()
	cache := make(map[string]convertedPod, len(pods))
	for _, p := range pods {
		k := p.Namespace + "/" + p.Name
		c, hit := s.podCache[k]
		if ns := nsByName[p.Namespace]; !hit || c.obj != p || c.ns != ns {
			var nsLabels map[string]string
			if ns != nil {
				nsLabels = ns.Labels
			}
			c = convertedPod{obj: p, ns: ns}
			c.pod, c.ok = s.pod(p, nsLabels)
			c.key = c.pod.Labels.Key()
		}
		cache[k] = c
	}
	s.podCache = cache
	s.podMu.Unlock()
	ports := map[identity.ID]map[string][]policy.NamedPort{}
	for _, p := range pods {
		c := cache[p.Namespace+"/"+p.Name]
		pod, ok := c.pod, c.ok
		if !ok {
			continue
		}
		pod.Identity = ids.byKey[c.key]
		st.Pods = append(st.Pods, pod)
		if pod.Identity == 0 {
			continue
		}
		m := ports[pod.Identity]
		if m == nil {
			m = map[string][]policy.NamedPort{}
			ports[pod.Identity] = m
		}
		for name, np := range pod.NamedPorts {
			if !slices.Contains(m[name], np) {
				m[name] = append(m[name], np)
			}
		}
	}
	for _, id := range ids.list {
		id.NamedPorts = ports[id.ID]
		st.Identities = append(st.Identities, id)
	}
	// Remote clusters' pods and identities (cluster mesh): their numbers
	// carry their cluster's id, so they never collide with this cluster's.
	for _, r := range remote {
		st.Pods = append(st.Pods, r.Pods...)
		st.Identities = append(st.Identities, r.Identities...)
	}
	slices.SortFunc(st.Pods, func(a, b Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name+"/"+a.Node, b.Namespace+"/"+b.Name+"/"+b.Node)
	})
	slices.SortFunc(st.Identities, func(a, b policy.Identity) int { return cmp.Compare(a.ID, b.ID) })

	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return PolicyState{}, fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes {
		st.Nodes = append(st.Nodes, Node(n))
	}
	slices.SortFunc(st.Nodes, func(a, b model.Node) int { return strings.Compare(a.Name, b.Name) })

	sls, err := s.slices.EndpointSlices("default").List(kubernetesSlices())
	if err != nil {
		return PolicyState{}, fmt.Errorf("list endpoint slices of the kubernetes service: %w", err)
	}
	for _, sl := range sls {
		for _, ep := range sl.Endpoints {
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && !slices.Contains(st.APIServer, ip) {
					st.APIServer = append(st.APIServer, ip)
				}
			}
		}
	}
	slices.SortFunc(st.APIServer, netip.Addr.Compare)
	return st, nil
}

type identityIndex struct {
	byKey map[string]identity.ID
	list  []policy.Identity
}

func (s *PolicySource) identityIndex() (identityIndex, error) {
	objs, err := s.identities.List(labels.Everything())
	if err != nil {
		return identityIndex{}, fmt.Errorf("list identities: %w", err)
	}
	s.idMu.Lock()
	idx, err := s.idCache.index(objs)
	s.idMu.Unlock()
	if err != nil {
		s.skipped("MembraneIdentity", err)
	}
	return idx, nil
}

// identityIndexOf reads MembraneIdentity objects; the unusable ones are
// reported in the error and left out.
func identityIndexOf(objs []runtime.Object) (identityIndex, error) {
	return (*identityCache)(nil).index(objs)
}

// identityCache keeps MembraneIdentity objects converted, by name: the
// informer replaces an object that changes, so one still the same object
// converts the same.
type identityCache struct {
	byName map[string]convertedIdentity
}

type convertedIdentity struct {
	obj *unstructured.Unstructured
	id  policy.Identity
	key string // id.Labels.Key()
	err error
}

// index converts objs, reusing the conversions of objects c saw (c nil:
// none), and forgets the objects no longer there.
func (c *identityCache) index(objs []runtime.Object) (identityIndex, error) {
	idx := identityIndex{byKey: map[string]identity.ID{}}
	var errs []error
	var seen map[string]convertedIdentity
	if c != nil {
		seen = make(map[string]convertedIdentity, len(objs))
	}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		conv, ok := convertedIdentity{}, false
		if c != nil {
			conv, ok = c.byName[u.GetName()]
			ok = ok && conv.obj == u
		}
		if !ok {
			conv = convertedIdentity{obj: u}
			conv.id, conv.err = convertIdentity(u)
			conv.key = conv.id.Labels.Key()
		}
		if seen != nil {
			seen[u.GetName()] = conv
		}
		if conv.err != nil {
			errs = append(errs, conv.err)
			continue
		}
		idx.byKey[conv.key] = conv.id.ID
		idx.list = append(idx.list, conv.id)
	}
	if c != nil {
		c.byName = seen
	}
	slices.SortFunc(idx.list, func(a, b policy.Identity) int { return cmp.Compare(a.ID, b.ID) })
	return idx, errors.Join(errs...)
}

// convertIdentity reads one MembraneIdentity object.
func convertIdentity(u *unstructured.Unstructured) (policy.Identity, error) {
	n, err := strconv.ParseUint(u.GetName(), 10, 32)
	if err != nil {
		return policy.Identity{}, fmt.Errorf("identity %q: name is not a number", u.GetName())
	}
	var mi v1alpha1.MembraneIdentity
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mi); err != nil {
		return policy.Identity{}, fmt.Errorf("identity %s: %w", u.GetName(), err)
	}
	return policy.Identity{ID: identity.ID(n), Labels: identity.Labels(mi.SecurityLabels)}, nil
}

// RemotePolicy is what policy needs of a remote cluster: its pods (with
// their identities) and its identities.
type RemotePolicy struct {
	Pods       []Pod
	Identities []policy.Identity
}

// SetRemotePolicy replaces what remote cluster contributes (nil: nothing).
func (s *PolicySource) SetRemotePolicy(cluster string, r *RemotePolicy) {
	s.mu.Lock()
	if r == nil {
		delete(s.remote, cluster)
	} else {
		s.remote[cluster] = *r
	}
	s.mu.Unlock()
	s.touch()
}

// remotePolicy converts a remote cluster's pods, namespaces and identities;
// its pods' labels carry cluster.
func remotePolicy(cluster string, filter identity.Filter, pods []*corev1.Pod, nss []*corev1.Namespace, ids []runtime.Object) (RemotePolicy, error) {
	filter.Cluster = cluster
	idx, err := identityIndexOf(ids)
	nsLabels := map[string]map[string]string{}
	for _, ns := range nss {
		nsLabels[ns.Name] = ns.Labels
	}
	var out RemotePolicy
	for _, p := range pods {
		pod, ok := podOf(filter, p, nsLabels[p.Namespace])
		if !ok {
			continue
		}
		pod.Identity = idx.byKey[pod.Labels.Key()]
		if pod.Identity == 0 {
			continue // no identity yet: the address stays world
		}
		pod.Node = cluster + "/" + pod.Node // never this cluster's node
		pod.Cluster = cluster
		out.Pods = append(out.Pods, pod)
	}
	out.Identities = idx.list
	return out, err
}

// pod converts a pod that has an address of its own.
func (s *PolicySource) pod(p *corev1.Pod, nsLabels map[string]string) (Pod, bool) {
	return podOf(s.filter, p, nsLabels)
}

func podOf(filter identity.Filter, p *corev1.Pod, nsLabels map[string]string) (Pod, bool) {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return Pod{}, false
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil {
		return Pod{}, false
	}
	out := Pod{
		Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, IP: ip,
		Labels: filter.ForPod(p.Labels, p.Namespace, nsLabels, p.Spec.ServiceAccountName),
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "" {
				continue
			}
			proto, err := model.ParseIPProtocol(string(cp.Protocol))
			if err != nil || cp.Protocol == "" {
				proto = policy.TCP
			}
			if out.NamedPorts == nil {
				out.NamedPorts = map[string]policy.NamedPort{}
			}
			out.NamedPorts[strings.ToLower(cp.Name)] = policy.NamedPort{Port: uint16(cp.ContainerPort), Proto: proto}
		}
	}
	return out, true
}

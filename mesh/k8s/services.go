package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/membrane-mesh/membrane/mesh/model"
)

// Skipped is told about input that could not be used, by kind and reason
// (for a metric); the object's usable rest is still handed on.
type Skipped func(kind string, err error)

// ServiceSource watches Services, EndpointSlices and Nodes and hands out, one
// service at a time, the model of every service that changed.
type ServiceSource struct {
	log     *slog.Logger
	skipped Skipped
	queue   workqueue.TypedInterface[model.ServiceID]

	// annotationProblem is told about a Service whose cluster-mesh
	// annotations cannot be read (nil: only the metric).
	annotationProblem func(*corev1.Service, error)

	mu       sync.Mutex
	services map[model.ServiceID]model.Service
	slices   map[model.ServiceID]map[string]model.EndpointSlice
	nodes    map[string]model.Node
}

// ServiceState is one service with everything its load balancing depends on.
type ServiceState struct {
	ID      model.ServiceID
	Service *model.Service // nil once deleted
	Slices  []model.EndpointSlice
	Nodes   []model.Node
}

// NewServiceSource registers its handlers on the shared informers; start
// and sync them, then call Run.
func NewServiceSource(log *slog.Logger, inf *Informers, skipped Skipped) (*ServiceSource, error) {
	s := &ServiceSource{
		log:      log,
		skipped:  skipped,
		queue:    workqueue.NewTyped[model.ServiceID](),
		services: map[model.ServiceID]model.Service{},
		slices:   map[model.ServiceID]map[string]model.EndpointSlice{},
		nodes:    map[string]model.Node{},
	}
	svc := inf.Typed.Core().V1().Services().Informer()
	eps := inf.Typed.Discovery().V1().EndpointSlices().Informer()
	nodes := inf.Typed.Core().V1().Nodes().Informer()
	for _, reg := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandlerFuncs
	}{
		{svc, cache.ResourceEventHandlerFuncs{AddFunc: s.onService, UpdateFunc: func(_, o any) { s.onService(o) }, DeleteFunc: s.onServiceDelete}},
		{eps, cache.ResourceEventHandlerFuncs{AddFunc: s.onSlice, UpdateFunc: func(_, o any) { s.onSlice(o) }, DeleteFunc: s.onSliceDelete}},
		{nodes, cache.ResourceEventHandlerFuncs{AddFunc: s.onNode, UpdateFunc: func(_, o any) { s.onNode(o) }, DeleteFunc: s.onNodeDelete}},
	} {
		if err := inf.Watch(reg.inf, reg.h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// OnAnnotationProblem sets who is told about a Service whose cluster-mesh
// annotations cannot be read; call it before the informers start.
func (s *ServiceSource) OnAnnotationProblem(f func(*corev1.Service, error)) {
	s.annotationProblem = f
}

// SetRemoteSlices replaces the endpoint slices remote cluster offers for
// service id (nil: none).
func (s *ServiceSource) SetRemoteSlices(cluster string, id model.ServiceID, slices []model.EndpointSlice) {
	s.mu.Lock()
	prefix := cluster + "/"
	changed := false
	for name := range s.slices[id] {
		if strings.HasPrefix(name, prefix) {
			delete(s.slices[id], name)
			changed = true
		}
	}
	for _, es := range slices {
		es.Cluster = cluster
		if s.slices[id] == nil {
			s.slices[id] = map[string]model.EndpointSlice{}
		}
		s.slices[id][prefix+es.Name] = es
		changed = true
	}
	if len(s.slices[id]) == 0 {
		delete(s.slices, id)
	}
	s.mu.Unlock()
	if changed {
		s.queue.Add(id)
	}
}

// DropCluster removes every slice remote cluster offered.
func (s *ServiceSource) DropCluster(cluster string) {
	s.mu.Lock()
	var ids []model.ServiceID
	for id, byName := range s.slices {
		for name, es := range byName {
			if es.Cluster == cluster {
				delete(byName, name)
				ids = append(ids, id)
			}
		}
		if len(byName) == 0 {
			delete(s.slices, id)
		}
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.queue.Add(id)
	}
}

// Run calls handle for every changed service, one at a time, until ctx is
// done. A service is handed out again if it changes while handled.
func (s *ServiceSource) Run(ctx context.Context, handle func(ServiceState)) {
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for {
		id, quit := s.queue.Get()
		if quit {
			return
		}
		handle(s.state(id))
		s.queue.Done(id)
	}
}

// Pending is the number of services waiting to be handled.
func (s *ServiceSource) Pending() int { return s.queue.Len() }

func (s *ServiceSource) state(id model.ServiceID) ServiceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ServiceState{ID: id}
	if svc, ok := s.services[id]; ok {
		st.Service = &svc
	}
	names := make([]string, 0, len(s.slices[id]))
	for n := range s.slices[id] {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st.Slices = append(st.Slices, s.slices[id][n])
	}
	nodes := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		st.Nodes = append(st.Nodes, s.nodes[n])
	}
	return st
}

func (s *ServiceSource) onService(obj any) {
	k, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	svc, err := Service(k)
	if err != nil {
		s.skipped("Service", err)
		s.log.Warn("service has unusable fields; programming the rest", "service", svc.ID, "error", err)
	}
	mesh, err := ServiceMesh(k)
	if err != nil {
		s.skipped("ServiceAnnotation", err)
		s.log.Warn("service has an unusable cluster-mesh annotation; it counts as absent", "service", svc.ID, "error", err)
		if s.annotationProblem != nil {
			s.annotationProblem(k, err)
		}
	}
	svc.Mesh = mesh
	s.mu.Lock()
	s.services[svc.ID] = svc
	s.mu.Unlock()
	s.queue.Add(svc.ID)
}

func (s *ServiceSource) onServiceDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	k, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	id := model.ServiceID{Namespace: k.Namespace, Name: k.Name}
	s.mu.Lock()
	delete(s.services, id)
	s.mu.Unlock()
	s.queue.Add(id)
}

func (s *ServiceSource) onSlice(obj any) {
	k, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	es, ok, err := EndpointSlice(k)
	if err != nil {
		s.skipped("EndpointSlice", err)
		s.log.Warn("endpointslice has unusable fields; programming the rest", "endpointslice", k.Namespace+"/"+k.Name, "error", err)
	}
	if !ok {
		return
	}
	s.mu.Lock()
	if s.slices[es.Service] == nil {
		s.slices[es.Service] = map[string]model.EndpointSlice{}
	}
	s.slices[es.Service][es.Name] = es
	s.mu.Unlock()
	s.queue.Add(es.Service)
}

func (s *ServiceSource) onSliceDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	k, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	svc := k.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return
	}
	id := model.ServiceID{Namespace: k.Namespace, Name: svc}
	s.mu.Lock()
	delete(s.slices[id], k.Name)
	if len(s.slices[id]) == 0 {
		delete(s.slices, id)
	}
	s.mu.Unlock()
	s.queue.Add(id)
}

// onNode re-queues the services with node ports when node addresses change.
func (s *ServiceSource) onNode(obj any) {
	k, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	n := Node(k)
	s.mu.Lock()
	old, had := s.nodes[n.Name]
	s.nodes[n.Name] = n
	changed := !had || fmt.Sprint(old.IPs) != fmt.Sprint(n.IPs)
	s.mu.Unlock()
	if changed {
		s.requeueNodePorts()
	}
}

func (s *ServiceSource) onNodeDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	k, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	s.mu.Lock()
	delete(s.nodes, k.Name)
	s.mu.Unlock()
	s.requeueNodePorts()
}

func (s *ServiceSource) requeueNodePorts() {
	s.mu.Lock()
	var ids []model.ServiceID
	for id, svc := range s.services {
		if svc.Type == model.NodePort || svc.Type == model.LoadBalancer {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.queue.Add(id)
	}
}

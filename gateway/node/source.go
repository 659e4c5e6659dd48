// Package node is the agent's side of the Gateway API: it watches the
// Gateway API objects and what they refer to, translates them (the same
// translation the operator writes status from) into the node Envoy's
// gateway listeners and clusters, and puts the addresses of the Gateways
// this node announces on its underlay interface.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/k8s"
)

// spacing coalesces bursts of changes (a Deployment rolling out) into one
// translation: a change after a quiet spell is translated at once, the
// changes that follow within spacing of that translation's start together
// once spacing has passed.
const spacing = 200 * time.Millisecond

func gatewayResource(version, name string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: gwv1.GroupName, Version: version, Resource: name}
}

// Source watches what the gateway translation reads.
type Source struct {
	log     *slog.Logger
	changed chan struct{}

	classes, gateways, routes, grpcRoutes, grants cache.GenericLister
	backendTLS                                    cache.GenericLister
	// The experimental route kinds: nil when not served.
	tlsRoutes, tcpRoutes, udpRoutes cache.GenericLister
	services, slices, namespaces    cache.Indexer
	nodes, secrets, configMaps      cache.Indexer
	ingresses, ingressClasses       cache.Indexer

	// mu guards converted: the typed copies of the dynamic informers'
	// objects by UID, reused while their resourceVersion stays.
	mu        sync.Mutex
	converted map[types.UID]convertedObject
}

type convertedObject struct {
	resourceVersion string
	obj             any
}

// NewSource registers the Source's informers on inf. Secrets (HTTPS
// listeners' certificates) and ConfigMaps (BackendTLSPolicies' CA
// certificates) are watched only in secretsNamespace, where the operator
// copies the ones the Gateways, Ingresses and policies refer to
// (gateway/synced): the translation sees the copies under their sources'
// names. The experimental route kinds are watched only when the cluster
// serves them (has their CRDs, as disco says at start).
func NewSource(log *slog.Logger, inf *k8s.Informers, disco discovery.DiscoveryInterface, secretsNamespace string) (*Source, error) {
	s := &Source{log: log, changed: make(chan struct{}, 1)}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.signal() },
		UpdateFunc: func(any, any) { s.signal() },
		DeleteFunc: func(any) { s.signal() },
	}
	type resource struct {
		gvr    schema.GroupVersionResource
		lister *cache.GenericLister
	}
	resources := []resource{
		{gatewayResource("v1", "gatewayclasses"), &s.classes},
		{gatewayResource("v1", "gateways"), &s.gateways},
		{gatewayResource("v1", "httproutes"), &s.routes},
		{gatewayResource("v1", "grpcroutes"), &s.grpcRoutes},
		{gatewayResource("v1beta1", "referencegrants"), &s.grants},
		{gatewayResource("v1", "backendtlspolicies"), &s.backendTLS},
	}
	kinds := ServedKinds(disco)
	for _, k := range []struct {
		served bool
		r      resource
	}{
		{kinds.TLSRoute, resource{experimental(tlsRoutesResource), &s.tlsRoutes}},
		{kinds.TCPRoute, resource{experimental(tcpRoutesResource), &s.tcpRoutes}},
		{kinds.UDPRoute, resource{experimental(udpRoutesResource), &s.udpRoutes}},
	} {
		if k.served {
			resources = append(resources, k.r)
		}
	}
	log.Info("gateway api kinds", "tlsRoutes", kinds.TLSRoute, "tcpRoutes", kinds.TCPRoute, "udpRoutes", kinds.UDPRoute)
	for _, r := range resources {
		gi := inf.Dynamic.ForResource(r.gvr)
		if err := inf.Watch(gi.Informer(), h); err != nil {
			return nil, fmt.Errorf("watch %s: %w", r.gvr.Resource, err)
		}
		*r.lister = gi.Lister()
	}
	copies := func(o *metav1.ListOptions) { o.LabelSelector = synced.LabelKind }
	secrets := inf.Typed.InformerFor(&corev1.Secret{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredSecretInformer(c, secretsNamespace, resync, cache.Indexers{}, copies)
	})
	configMaps := inf.Typed.InformerFor(&corev1.ConfigMap{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredConfigMapInformer(c, secretsNamespace, resync, cache.Indexers{}, copies)
	})
	for _, r := range []struct {
		inf     cache.SharedIndexInformer
		indexer *cache.Indexer
	}{
		{inf.Typed.Core().V1().Services().Informer(), &s.services},
		{inf.Typed.Discovery().V1().EndpointSlices().Informer(), &s.slices},
		{inf.Typed.Core().V1().Namespaces().Informer(), &s.namespaces},
		{inf.Typed.Core().V1().Nodes().Informer(), &s.nodes},
		{secrets, &s.secrets},
		{configMaps, &s.configMaps},
		{inf.Typed.Networking().V1().Ingresses().Informer(), &s.ingresses},
		{inf.Typed.Networking().V1().IngressClasses().Informer(), &s.ingressClasses},
	} {
		if err := inf.Watch(r.inf, h); err != nil {
			return nil, err
		}
		*r.indexer = r.inf.GetIndexer()
	}
	return s, nil
}

// served reports whether the API server serves gvr.
func served(disco discovery.DiscoveryInterface, gvr schema.GroupVersionResource) bool {
	list, err := disco.ServerResourcesForGroupVersion(gvr.GroupVersion().String())
	if err != nil {
		return false
	}
	for _, r := range list.APIResources {
		if r.Name == gvr.Resource {
			return true
		}
	}
	return false
}

// Served are the experimental route kinds the Source watches (the API
// server served them when it was made).
func (s *Source) Served() translate.ExperimentalKinds {
	return translate.ExperimentalKinds{TLSRoute: s.tlsRoutes != nil, TCPRoute: s.tcpRoutes != nil, UDPRoute: s.udpRoutes != nil}
}

func (s *Source) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Changed is signalled (coalesced) when a watched object changes.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// Input is the translation input as the informers have it now, and the
// cluster's Nodes. Like the typed informers' objects, the objects it
// returns are shared: not to be modified.
func (s *Source) Input() (translate.Input, []corev1.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var in translate.Input
	var err error
	next := make(map[types.UID]convertedObject, len(s.converted))
	defer func() { s.converted = next }()
	if in.GatewayClasses, err = typed[gwv1.GatewayClass](s.classes, s.converted, next); err != nil {
		return in, nil, err
	}
	if in.Gateways, err = typed[gwv1.Gateway](s.gateways, s.converted, next); err != nil {
		return in, nil, err
	}
	if in.HTTPRoutes, err = typed[gwv1.HTTPRoute](s.routes, s.converted, next); err != nil {
		return in, nil, err
	}
	if in.GRPCRoutes, err = typed[gwv1.GRPCRoute](s.grpcRoutes, s.converted, next); err != nil {
		return in, nil, err
	}
	if s.tlsRoutes != nil {
		if in.TLSRoutes, err = typed[gwv1alpha2.TLSRoute](s.tlsRoutes, s.converted, next); err != nil {
			return in, nil, err
		}
	}
	if s.tcpRoutes != nil {
		if in.TCPRoutes, err = typed[gwv1alpha2.TCPRoute](s.tcpRoutes, s.converted, next); err != nil {
			return in, nil, err
		}
	}
	if s.udpRoutes != nil {
		if in.UDPRoutes, err = typed[gwv1alpha2.UDPRoute](s.udpRoutes, s.converted, next); err != nil {
			return in, nil, err
		}
	}
	in.Served = s.Served()
	if in.ReferenceGrants, err = typed[gwv1beta1.ReferenceGrant](s.grants, s.converted, next); err != nil {
		return in, nil, err
	}
	if in.BackendTLSPolicies, err = typed[gwv1.BackendTLSPolicy](s.backendTLS, s.converted, next); err != nil {
		return in, nil, err
	}
	in.Services = items[corev1.Service](s.services)
	in.EndpointSlices = items[discoveryv1.EndpointSlice](s.slices)
	in.Namespaces = items[corev1.Namespace](s.namespaces)
	in.Secrets, in.ConfigMaps = synced.Origins(items[corev1.Secret](s.secrets), items[corev1.ConfigMap](s.configMaps))
	in.Ingresses = items[networkingv1.Ingress](s.ingresses)
	in.IngressClasses = items[networkingv1.IngressClass](s.ingressClasses)
	in.Addresses = translate.AddressesFromStatus(in.Gateways)
	maps.Copy(in.Addresses, translate.IngressAddressesFromStatus(translate.OwnedIngresses(in.IngressClasses, in.Ingresses)))
	return in, items[corev1.Node](s.nodes), nil
}

// typed converts a dynamic lister's objects, reusing the conversions in
// prev of the objects whose resourceVersion did not change (converting 1,000
// HTTPRoutes again on every change would cost more than translating them),
// and records the conversions in next.
func typed[T any](l cache.GenericLister, prev, next map[types.UID]convertedObject) ([]T, error) {
	objs, err := l.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(interface {
			runtime.Unstructured
			GetUID() types.UID
			GetResourceVersion() string
		})
		if !ok {
			continue
		}
		uid, rv := u.GetUID(), u.GetResourceVersion()
		if c, ok := prev[uid]; ok && rv != "" && c.resourceVersion == rv {
			if t, ok := c.obj.(T); ok {
				out = append(out, t)
				next[uid] = c
				continue
			}
		}
		var t T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &t); err != nil {
			return nil, fmt.Errorf("convert %T: %w", t, err)
		}
		out = append(out, t)
		if uid != "" {
			next[uid] = convertedObject{resourceVersion: rv, obj: t}
		}
	}
	return out, nil
}

// items copies a typed indexer's objects.
func items[T any](idx cache.Indexer) []T {
	objs := idx.List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(*T); ok {
			out = append(out, *t)
		}
	}
	return out
}

// Run translates on every change (after the informers synced) and hands
// the node Envoy's gateway resources to publish and the addresses of the
// listeners to announce (the L2 announcer elects their holders), until ctx
// is done.
func Run(ctx context.Context, log *slog.Logger, s *Source, synced <-chan struct{},
	publish func(context.Context, translate.Resources), announce func([]netip.Addr)) {
	select {
	case <-synced:
	case <-ctx.Done():
		return
	}
	s.signal()
	throttle(ctx, s.changed, spacing, func() {
		in, _, err := s.Input()
		if err != nil {
			log.Error("read the gateway objects", "error", err)
			return
		}
		model, _ := translate.Build(in)
		res, err := translate.Render(model)
		if err != nil {
			log.Error("render the gateway configuration", "error", err)
			return
		}
		publish(ctx, res)
		addrs := Addresses(model)
		announce(addrs)
		log.Debug("gateway configuration", "listeners", len(res.Listeners), "clusters", len(res.Clusters), "addresses", len(addrs))
	})
}

// throttle calls do after each signal on changed, until ctx is done: at
// once when the previous call started at least every ago, else when it is
// that old; the signals meanwhile make one call.
func throttle(ctx context.Context, changed <-chan struct{}, every time.Duration, do func()) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		if wait := every - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		// Signals that came during the wait are in this call.
		select {
		case <-changed:
		default:
		}
		last = time.Now()
		do()
	}
}

// Package controller is the operator's Gateway API controller: it keeps
// Membrane's GatewayClass, assigns Gateways their addresses from the pool
// (LB IPAM) and writes the status of every GatewayClass, Gateway and
// HTTPRoute of Membrane's, as gateway/translate computes it. The node
// agents serve the same translation; this controller writes status and
// keeps the copies of the Secrets and ConfigMaps that translation reads in
// the secrets namespace, the only ones the agents may read
// (gateway/synced).
//
// It reconciles the whole Gateway API state in one pass (one work item):
// routes, Gateways and their references depend on each other, and the
// number of Gateways of a cluster is small. Of the Services, only those
// that can change the result reconcile: the LoadBalancers (their addresses
// take part in the assignment) and those an object of the translation's
// refers to (found by field index, servicerefs.go).
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	gwnode "github.com/membrane-mesh/membrane/gateway/node"
	"github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/lbipam"
	"github.com/membrane-mesh/membrane/mesh/operator"
)

// Config is the controller's configuration.
type Config struct {
	// ClassName is the GatewayClass the controller creates when missing
	// ("" creates none; every class with Membrane's controllerName is
	// served either way).
	ClassName string
	// SecretsNamespace holds the copies of the Secrets and ConfigMaps the
	// Gateways, Ingresses and BackendTLSPolicies refer to, the only ones
	// the node agents read ("": none are made).
	SecretsNamespace string
	// Addresses is the load-balancer address assignment's ledger, shared
	// with the LB IPAM controller (nil: one of its own).
	Addresses *lbipam.Ledger
}

// Reconciler is the controller.
type Reconciler struct {
	log *slog.Logger
	c   client.Client
	cfg Config
	now func() time.Time
	// served: the experimental route kinds the cluster serves, seen at
	// Setup.
	served translate.ExperimentalKinds
	// events records the Ingresses' problems; ingressProblems are the
	// ones recorded last pass, per Ingress.
	events          record.EventRecorder
	ingressProblems map[string][]string
}

// New returns the controller; Setup registers it with a manager.
func New(log *slog.Logger, c client.Client, cfg Config) *Reconciler {
	if cfg.Addresses == nil {
		cfg.Addresses = &lbipam.Ledger{}
	}
	return &Reconciler{log: log, c: c, cfg: cfg, now: time.Now, ingressProblems: map[string][]string{}}
}

// workItem is the one work item: every change reconciles everything.
func workItem() reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Name: "gateway-api"}}
}

// Setup watches every kind the translation reads (of the Services, those
// that can change its result; of the Secrets and ConfigMaps, those it
// reads and the copies) and indexes the objects that refer to Services,
// Secrets and ConfigMaps.
func (r *Reconciler) Setup(ctx context.Context, mgr ctrl.Manager) error {
	enqueue := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{workItem()}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("gateway-api")
	watched := []client.Object{
		&gwv1.GatewayClass{}, &gwv1.Gateway{}, &gwv1.HTTPRoute{}, &gwv1.GRPCRoute{}, &gwv1beta1.ReferenceGrant{},
		&gwv1.BackendTLSPolicy{}, &corev1.Namespace{},
		&networkingv1.Ingress{}, &networkingv1.IngressClass{}, &v1alpha1.MembraneLoadBalancerIPPool{},
	}
	r.events = mgr.GetEventRecorderFor("membrane-operator")
	// TLSRoutes, TCPRoutes and UDPRoutes come with the experimental CRDs
	// only.
	disco, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	r.served = gwnode.ServedKinds(disco)
	for _, k := range []struct {
		served bool
		obj    client.Object
	}{{r.served.TLSRoute, &gwv1alpha2.TLSRoute{}}, {r.served.TCPRoute, &gwv1alpha2.TCPRoute{}}, {r.served.UDPRoute, &gwv1alpha2.UDPRoute{}}} {
		if k.served {
			watched = append(watched, k.obj)
		}
	}
	r.log.Info("gateway api kinds", "tlsRoutes", r.served.TLSRoute, "tcpRoutes", r.served.TCPRoute, "udpRoutes", r.served.UDPRoute)
	if !r.served.All() {
		// Exits the manager (and the operator restarts) once one appears.
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			return gwnode.AwaitKinds(ctx, disco, r.served, 5*time.Second)
		})); err != nil {
			return fmt.Errorf("watch for experimental route kinds: %w", err)
		}
	}
	for _, obj := range watched {
		b = b.Watches(obj, enqueue)
	}
	referrers := serviceReferrers(r.served)
	if err := indexRefs(ctx, r.log, mgr.GetFieldIndexer(), serviceRefIndex, referrers); err != nil {
		return err
	}
	b = b.Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(serviceEvents(r.log, mgr.GetCache(), referrers)))
	for _, d := range []struct {
		obj       client.Object
		field     string
		referrers []referrer
	}{
		{&corev1.Secret{}, secretRefIndex, secretReferrers()},
		{&corev1.ConfigMap{}, configMapRefIndex, configMapReferrers()},
	} {
		if err := indexRefs(ctx, r.log, mgr.GetFieldIndexer(), d.field, d.referrers); err != nil {
			return err
		}
		b = b.Watches(d.obj, handler.EnqueueRequestsFromMapFunc(dataEvents(r.log, mgr.GetCache(), d.field, d.referrers, r.cfg.SecretsNamespace)))
	}
	// The node agents report what their Envoy rejects on their Node.
	b = b.WatchesMetadata(nodeMetadata(), enqueue, builder.WithPredicates(predicate.AnnotationChangedPredicate{}))
	if err := b.Complete(r); err != nil {
		return fmt.Errorf("set up gateway api controller: %w", err)
	}
	return nil
}

// Reconcile assigns addresses and writes every status that differs.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	if err := r.ensureClass(ctx); err != nil {
		return ctrl.Result{}, err
	}
	in, err := r.input(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	_, st, refs := translate.BuildWithReferences(in)
	// The copies first: the agents serve no certificate without them.
	errs := []error{r.syncCopies(ctx, in, refs)}
	rejected, err := r.proxyRejections(ctx)
	if err != nil {
		return ctrl.Result{}, errors.Join(append(errs, err)...)
	}
	foldRejections(&st, in, mergeRejections(rejected))
	for _, s := range st.GatewayClasses {
		errs = append(errs, r.writeClass(ctx, s))
	}
	for _, s := range st.Gateways {
		errs = append(errs, r.writeGateway(ctx, s))
	}
	errs = append(errs, writeRoutes(ctx, r, "HTTPRoute", st.HTTPRoutes, func(rt *gwv1.HTTPRoute) *[]gwv1.RouteParentStatus { return &rt.Status.Parents }))
	errs = append(errs, writeRoutes(ctx, r, "GRPCRoute", st.GRPCRoutes, func(rt *gwv1.GRPCRoute) *[]gwv1.RouteParentStatus { return &rt.Status.Parents }))
	errs = append(errs, writeRoutes(ctx, r, "TLSRoute", st.TLSRoutes, func(rt *gwv1alpha2.TLSRoute) *[]gwv1.RouteParentStatus { return &rt.Status.Parents }))
	errs = append(errs, writeRoutes(ctx, r, "TCPRoute", st.TCPRoutes, func(rt *gwv1alpha2.TCPRoute) *[]gwv1.RouteParentStatus { return &rt.Status.Parents }))
	errs = append(errs, writeRoutes(ctx, r, "UDPRoute", st.UDPRoutes, func(rt *gwv1alpha2.UDPRoute) *[]gwv1.RouteParentStatus { return &rt.Status.Parents }))
	written := map[types.NamespacedName]bool{}
	for _, s := range st.BackendTLSPolicies {
		written[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = true
		errs = append(errs, r.writePolicy(ctx, s))
	}
	// Policies that no longer reach a Gateway of Membrane's lose its
	// ancestor entries.
	for _, p := range in.BackendTLSPolicies {
		if !written[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] && slices.ContainsFunc(p.Status.Ancestors,
			func(a gwv1.PolicyAncestorStatus) bool { return a.ControllerName == translate.ControllerName }) {
			errs = append(errs, r.writePolicy(ctx, translate.PolicyStatus{Namespace: p.Namespace, Name: p.Name}))
		}
	}
	for _, s := range st.Ingresses {
		errs = append(errs, r.writeIngress(ctx, s))
	}
	r.forgetIngresses(in.Ingresses)
	return ctrl.Result{}, errors.Join(errs...)
}

func (r *Reconciler) ensureClass(ctx context.Context) error {
	if r.cfg.ClassName == "" {
		return nil
	}
	var gc gwv1.GatewayClass
	err := r.c.Get(ctx, types.NamespacedName{Name: r.cfg.ClassName}, &gc)
	if err == nil || !apierrors.IsNotFound(err) {
		return client.IgnoreNotFound(err)
	}
	desc := "Gateways served by the Membrane node Envoys"
	gc = gwv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: r.cfg.ClassName, Labels: map[string]string{"app.kubernetes.io/managed-by": "membrane-operator"}},
		Spec:       gwv1.GatewayClassSpec{ControllerName: translate.ControllerName, Description: &desc},
	}
	if err := r.c.Create(ctx, &gc); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create GatewayClass %s: %w", r.cfg.ClassName, err)
	}
	r.log.Info("GatewayClass created", "name", r.cfg.ClassName)
	return nil
}

// input lists everything the translation reads and assigns the addresses.
func (r *Reconciler) input(ctx context.Context) (translate.Input, error) {
	var (
		classes  gwv1.GatewayClassList
		gws      gwv1.GatewayList
		routes   gwv1.HTTPRouteList
		grpc     gwv1.GRPCRouteList
		grants   gwv1beta1.ReferenceGrantList
		nss      corev1.NamespaceList
		services corev1.ServiceList
		btls     gwv1.BackendTLSPolicyList
	)
	for _, l := range []client.ObjectList{&classes, &gws, &routes, &grpc, &grants, &nss, &services, &btls} {
		if err := r.c.List(ctx, l); err != nil {
			return translate.Input{}, fmt.Errorf("list %T: %w", l, err)
		}
	}
	var (
		tls gwv1alpha2.TLSRouteList
		tcp gwv1alpha2.TCPRouteList
		udp gwv1alpha2.UDPRouteList
	)
	for _, k := range []struct {
		served bool
		list   client.ObjectList
	}{{r.served.TLSRoute, &tls}, {r.served.TCPRoute, &tcp}, {r.served.UDPRoute, &udp}} {
		if !k.served {
			continue
		}
		if err := r.c.List(ctx, k.list); err != nil {
			return translate.Input{}, fmt.Errorf("list %T: %w", k.list, err)
		}
	}
	in := translate.Input{
		TLSRoutes: tls.Items, TCPRoutes: tcp.Items, UDPRoutes: udp.Items, Served: r.served,
		GatewayClasses: classes.Items, Gateways: gws.Items, HTTPRoutes: routes.Items, GRPCRoutes: grpc.Items,
		ReferenceGrants: grants.Items, Namespaces: nss.Items, Services: services.Items,
		BackendTLSPolicies: btls.Items,
	}
	var ings networkingv1.IngressList
	var ingClasses networkingv1.IngressClassList
	for _, l := range []client.ObjectList{&ings, &ingClasses} {
		if err := r.c.List(ctx, l); err != nil {
			return translate.Input{}, fmt.Errorf("list %T: %w", l, err)
		}
	}
	in.Ingresses, in.IngressClasses = ings.Items, ingClasses.Items
	if err := referencedData(ctx, r.c, &in); err != nil {
		return translate.Input{}, err
	}
	claims, objs := AddressClaims(classes.Items, gws.Items, ingClasses.Items, ings.Items)
	// The assignment the LB IPAM controller computes too: the Services'
	// claims take part, so no Gateway gets a Service's address.
	_, pools, _, err := operator.ReadPools(ctx, r.c)
	if err != nil {
		return translate.Input{}, err
	}
	svcClaims, _ := operator.ServiceClaims(services.Items, nil)
	res := r.cfg.Addresses.Assign(pools, append(svcClaims, claims...))
	in.Addresses = map[types.NamespacedName]netip.Addr{}
	for key, nn := range objs {
		if a, ok := res.Addresses[key]; ok {
			in.Addresses[nn] = a
		} else if p, ok := res.Problems[key]; ok {
			r.log.Warn("no address for gateway", "gateway", key, "reason", p)
		}
	}
	return in, nil
}

// Claims are the claims of Membrane's Gateways and Ingresses on the
// load-balancer IP pools: the LB IPAM controller takes them into its
// assignment.
func (r *Reconciler) Claims(ctx context.Context) ([]lbipam.Claim, error) {
	var (
		classes    gwv1.GatewayClassList
		gws        gwv1.GatewayList
		ings       networkingv1.IngressList
		ingClasses networkingv1.IngressClassList
	)
	for _, l := range []client.ObjectList{&classes, &gws, &ings, &ingClasses} {
		if err := r.c.List(ctx, l); err != nil {
			return nil, fmt.Errorf("list %T: %w", l, err)
		}
	}
	claims, _ := AddressClaims(classes.Items, gws.Items, ingClasses.Items, ings.Items)
	return claims, nil
}

// Watched are the kinds Claims reads.
func Watched() []client.Object {
	return []client.Object{&gwv1.GatewayClass{}, &gwv1.Gateway{}, &networkingv1.Ingress{}, &networkingv1.IngressClass{}}
}

// AddressClaims are the address claims of the Gateways of Membrane's
// GatewayClasses (key "gateway:namespace/name"; the Gateway's labels, the
// IPAddress its spec.addresses asks for as the requested address; none for
// a Gateway whose spec.addresses cannot be honoured) and of
// Membrane's Ingresses (key "ingress:" and the Ingress's address key: one
// per dedicated Ingress, one for all shared ones, with the oldest one's
// time and labels), and the object each key stands for.
func AddressClaims(classes []gwv1.GatewayClass, gws []gwv1.Gateway, ingClasses []networkingv1.IngressClass, ings []networkingv1.Ingress) ([]lbipam.Claim, map[string]types.NamespacedName) {
	ours := map[string]bool{}
	for _, gc := range classes {
		ours[gc.Name] = gc.Spec.ControllerName == translate.ControllerName
	}
	objs := map[string]types.NamespacedName{}
	var claims []lbipam.Claim
	current := translate.AddressesFromStatus(gws)
	for _, gw := range gws {
		if !ours[string(gw.Spec.GatewayClassName)] {
			continue
		}
		nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		key := translate.GatewayClaimKey(nn)
		objs[key] = nn
		requested, reason, _ := translate.RequestedAddress(&gw)
		if reason != "" {
			continue // spec.addresses cannot be honoured: no address (its status says why)
		}
		claims = append(claims, lbipam.Claim{Key: key, Labels: labels.Set(gw.Labels), Current: current[nn],
			Requested: requested, Created: gw.CreationTimestamp.UnixNano()})
	}
	owned := translate.OwnedIngresses(ingClasses, ings)
	ingCurrent := translate.IngressAddressesFromStatus(owned)
	byKey := map[types.NamespacedName]int{}
	for _, o := range owned {
		created := o.Ingress.CreationTimestamp.UnixNano()
		if i, ok := byKey[o.Key]; ok {
			if created < claims[i].Created {
				claims[i].Created, claims[i].Labels = created, labels.Set(o.Ingress.Labels)
			}
			continue
		}
		key := translate.IngressClaimKey(o.Key)
		objs[key] = o.Key
		byKey[o.Key] = len(claims)
		claims = append(claims, lbipam.Claim{Key: key, Labels: labels.Set(o.Ingress.Labels), Current: ingCurrent[o.Key], Created: created})
	}
	return claims, objs
}

func (r *Reconciler) writeClass(ctx context.Context, s translate.GatewayClassStatus) error {
	var gc gwv1.GatewayClass
	if err := r.c.Get(ctx, types.NamespacedName{Name: s.Name}, &gc); err != nil {
		return client.IgnoreNotFound(err)
	}
	want := gc.Status.DeepCopy()
	want.Conditions = r.mergeConditions(gc.Status.Conditions, s.Status.Conditions)
	want.SupportedFeatures = s.Status.SupportedFeatures
	if equality.Semantic.DeepEqual(&gc.Status, want) {
		return nil
	}
	gc.Status = *want
	if err := r.c.Status().Update(ctx, &gc); err != nil {
		return fmt.Errorf("update GatewayClass %s status: %w", gc.Name, err)
	}
	return nil
}

func (r *Reconciler) writeGateway(ctx context.Context, s translate.GatewayStatus) error {
	var gw gwv1.Gateway
	if err := r.c.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, &gw); err != nil {
		return client.IgnoreNotFound(err)
	}
	want := s.Status.DeepCopy()
	want.Conditions = r.mergeConditions(gw.Status.Conditions, want.Conditions)
	for i := range want.Listeners {
		var old []metav1.Condition
		for _, o := range gw.Status.Listeners {
			if o.Name == want.Listeners[i].Name {
				old = o.Conditions
			}
		}
		want.Listeners[i].Conditions = r.mergeConditions(old, want.Listeners[i].Conditions)
	}
	if equality.Semantic.DeepEqual(&gw.Status, want) {
		return nil
	}
	gw.Status = *want
	if err := r.c.Status().Update(ctx, &gw); err != nil {
		return fmt.Errorf("update Gateway %s/%s status: %w", gw.Namespace, gw.Name, err)
	}
	r.log.Info("gateway status updated", "gateway", s.Namespace+"/"+s.Name, "addresses", len(want.Addresses))
	return nil
}

// writeRoutes writes the statuses of the routes of one kind (T, whose
// parent statuses parents finds).
func writeRoutes[T any, PT interface {
	*T
	client.Object
}](ctx context.Context, r *Reconciler, kind string, statuses []translate.RouteStatus, parents func(PT) *[]gwv1.RouteParentStatus) error {
	var errs []error
	for _, s := range statuses {
		obj := PT(new(T))
		errs = append(errs, r.writeRoute(ctx, s, kind, obj, parents(obj)))
	}
	return errors.Join(errs...)
}

// writeRoute merges Membrane's parent statuses s into the status of the
// route obj of the given kind; parents points at obj's status.parents
// (each route kind has its own status type).
func (r *Reconciler) writeRoute(ctx context.Context, s translate.RouteStatus, kind string, obj client.Object, parents *[]gwv1.RouteParentStatus) error {
	if err := r.c.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	merged := r.mergeParents(*parents, s.Parents)
	if equality.Semantic.DeepEqual(*parents, merged) {
		return nil
	}
	*parents = merged
	if err := r.c.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("update %s %s/%s status: %w", kind, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// writePolicy merges Membrane's ancestor statuses into a BackendTLSPolicy's
// status, keeping other controllers' ancestors and transition times.
func (r *Reconciler) writePolicy(ctx context.Context, s translate.PolicyStatus) error {
	var p gwv1.BackendTLSPolicy
	if err := r.c.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, &p); err != nil {
		return client.IgnoreNotFound(err)
	}
	merged := []gwv1.PolicyAncestorStatus{} // required by the API, even empty
	for _, a := range p.Status.Ancestors {
		if a.ControllerName != translate.ControllerName {
			merged = append(merged, a)
		}
	}
	for _, a := range s.Ancestors {
		var prev []metav1.Condition
		for _, o := range p.Status.Ancestors {
			if o.ControllerName == translate.ControllerName && equality.Semantic.DeepEqual(o.AncestorRef, a.AncestorRef) {
				prev = o.Conditions
			}
		}
		a.Conditions = r.mergeConditions(prev, a.Conditions)
		merged = append(merged, a)
	}
	if len(merged) > 16 {
		merged = merged[:16] // the API's limit
	}
	if equality.Semantic.DeepEqual(p.Status.Ancestors, merged) {
		return nil
	}
	p.Status.Ancestors = merged
	if err := r.c.Status().Update(ctx, &p); err != nil {
		return fmt.Errorf("update BackendTLSPolicy %s/%s status: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// mergeParents keeps the parent statuses of other controllers and replaces
// Membrane's with want, keeping transition times.
func (r *Reconciler) mergeParents(old, want []gwv1.RouteParentStatus) []gwv1.RouteParentStatus {
	var parents []gwv1.RouteParentStatus
	for _, p := range old {
		if p.ControllerName != translate.ControllerName {
			parents = append(parents, p) // another controller's
		}
	}
	for _, p := range want {
		var prev []metav1.Condition
		for _, o := range old {
			if o.ControllerName == translate.ControllerName && equality.Semantic.DeepEqual(o.ParentRef, p.ParentRef) {
				prev = o.Conditions
			}
		}
		p.Conditions = r.mergeConditions(prev, p.Conditions)
		parents = append(parents, p)
	}
	return parents
}

// mergeConditions returns want with the transition times of old where a
// condition keeps its status, now otherwise; conditions of old of other
// types are kept after them, but for RouteConditionProgrammed and a
// Gateway's InsecureFrontendValidationMode (present only while they
// apply).
func (r *Reconciler) mergeConditions(old, want []metav1.Condition) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(want))
	now := metav1.NewTime(r.now().Truncate(time.Second))
	for _, c := range want {
		c.LastTransitionTime = now
		if o := meta.FindStatusCondition(old, c.Type); o != nil && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
		}
		out = append(out, c)
	}
	for _, o := range old {
		transient := o.Type == RouteConditionProgrammed || o.Type == string(gwv1.GatewayConditionInsecureFrontendValidationMode)
		if meta.FindStatusCondition(want, o.Type) == nil && !transient {
			out = append(out, o)
		}
	}
	return out
}

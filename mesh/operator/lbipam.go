package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/lbipam"
)

// LBIPAMController gives every Service of type LoadBalancer (without a
// spec.loadBalancerClass) an address from the MembraneLoadBalancerIPPools,
// in status.loadBalancer.ingress, and writes each pool's status. A Service
// that gets no address keeps none and gets a Warning Event
// (AddressNotAssigned) saying why. The whole state is one work item: pools
// and Services depend on each other.
type LBIPAMController struct {
	log      *slog.Logger
	c        client.Client
	ledger   *lbipam.Ledger
	recorder record.EventRecorder
	other    OtherClaims
}

// OtherClaims are the claims on the pools besides the Services' ones
// (Gateways and Ingresses): they take part in the assignment, so no
// Service gets their addresses and the pools' status counts them, but
// their owner writes their status.
type OtherClaims struct {
	// Claims lists them.
	Claims func(ctx context.Context) ([]lbipam.Claim, error)
	// Watch: the kinds whose changes change them.
	Watch []client.Object
}

// WithOtherClaims makes the assignment include o's claims.
func (r *LBIPAMController) WithOtherClaims(o OtherClaims) *LBIPAMController {
	r.other = o
	return r
}

// NewLBIPAMController returns the controller; Setup registers it. ledger
// is shared with the owner of the other claims (WithOtherClaims), which
// computes the same assignment.
func NewLBIPAMController(log *slog.Logger, c client.Client, ledger *lbipam.Ledger) *LBIPAMController {
	return &LBIPAMController{log: log, c: c, ledger: ledger}
}

// serviceTypeIndex indexes the cached Services by spec.type.
const serviceTypeIndex = "spec.type"

// Setup indexes Services by type and watches pools and the Services of
// type LoadBalancer: a change of any other Service (most of a cluster's)
// costs nothing.
func (r *LBIPAMController) Setup(ctx context.Context, mgr ctrl.Manager) error {
	r.recorder = mgr.GetEventRecorderFor("membrane-lbipam")
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Service{}, serviceTypeIndex, func(o client.Object) []string {
		return []string{string(o.(*corev1.Service).Spec.Type)}
	}); err != nil {
		return fmt.Errorf("index services by type: %w", err)
	}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "lb-ipam"}}}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("lb-ipam").
		Watches(&v1alpha1.MembraneLoadBalancerIPPool{}, one).
		Watches(&corev1.Service{}, one, builder.WithPredicates(loadBalancers()))
	for _, o := range r.other.Watch {
		b = b.Watches(o, one)
	}
	return b.Complete(r)
}

// poolFrom reads a pool; a block or selector it cannot read makes it
// invalid (it hands out nothing).
func poolFrom(p *v1alpha1.MembraneLoadBalancerIPPool) (lbipam.Pool, error) {
	out := lbipam.Pool{Name: p.Name, Created: p.CreationTimestamp.UnixNano(), Disabled: p.Spec.Disabled}
	var errs []error
	for i, b := range p.Spec.Blocks {
		var r lbipam.Range
		var err error
		if b.CIDR != "" {
			r, err = lbipam.ParseCIDR(b.CIDR)
		} else {
			r, err = lbipam.ParseRange(b.Start, b.Stop)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.blocks[%d]: %w", i, err))
			continue
		}
		out.Ranges = append(out.Ranges, r)
	}
	if p.Spec.ServiceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.ServiceSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.serviceSelector: %w", err))
		}
		out.Selector = sel
	}
	return out, errors.Join(errs...)
}

func managedLB(s *corev1.Service) bool {
	return s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil
}

// loadBalancers passes the events of Services that are, or were, of type
// LoadBalancer: a Service that stops being one gives its address back.
func loadBalancers() predicate.TypedPredicate[client.Object] {
	isLB := func(o client.Object) bool {
		s, ok := o.(*corev1.Service)
		return ok && s.Spec.Type == corev1.ServiceTypeLoadBalancer
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return isLB(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return isLB(e.ObjectOld) || isLB(e.ObjectNew) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return isLB(e.Object) },
		GenericFunc: func(e event.GenericEvent) bool { return isLB(e.Object) },
	}
}

// ReadPools lists the MembraneLoadBalancerIPPools: those it can read, and
// why it cannot read the others (by name).
func ReadPools(ctx context.Context, c client.Client) (*v1alpha1.MembraneLoadBalancerIPPoolList, []lbipam.Pool, map[string]error, error) {
	var pools v1alpha1.MembraneLoadBalancerIPPoolList
	if err := c.List(ctx, &pools); err != nil {
		return nil, nil, nil, fmt.Errorf("list load-balancer IP pools: %w", err)
	}
	var in []lbipam.Pool
	invalid := map[string]error{}
	for i := range pools.Items {
		p, err := poolFrom(&pools.Items[i])
		if err != nil {
			invalid[p.Name] = err
			continue
		}
		in = append(in, p)
	}
	return &pools, in, invalid, nil
}

// ServiceClaims are the claims of the Services of type LoadBalancer this
// controller serves (key "namespace/name"), and those Services by key. A
// Service whose spec.loadBalancerIP cannot be read makes no claim: bad
// reports it.
func ServiceClaims(svcs []corev1.Service, bad func(s *corev1.Service, msg string)) ([]lbipam.Claim, map[string]*corev1.Service) {
	var claims []lbipam.Claim
	byKey := map[string]*corev1.Service{}
	for i := range svcs {
		s := &svcs[i]
		if !managedLB(s) {
			continue
		}
		key := s.Namespace + "/" + s.Name
		byKey[key] = s
		c := lbipam.Claim{Key: key, Labels: labels.Set(s.Labels), Created: s.CreationTimestamp.UnixNano()}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is4() {
				c.Current = a
				break
			}
		}
		if s.Spec.LoadBalancerIP != "" {
			a, err := netip.ParseAddr(s.Spec.LoadBalancerIP)
			if err != nil || !a.Is4() {
				if bad != nil {
					bad(s, fmt.Sprintf("spec.loadBalancerIP %q is not an IPv4 address", s.Spec.LoadBalancerIP))
				}
				continue
			}
			c.Requested = a
		}
		claims = append(claims, c)
	}
	return claims, byKey
}

// Reconcile implements reconcile.Reconciler.
func (r *LBIPAMController) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	pools, in, invalid, err := ReadPools(ctx, r.c)
	if err != nil {
		return reconcile.Result{}, err
	}
	var svcs corev1.ServiceList
	if err := r.c.List(ctx, &svcs, client.MatchingFields{serviceTypeIndex: string(corev1.ServiceTypeLoadBalancer)}); err != nil {
		return reconcile.Result{}, fmt.Errorf("list services of type LoadBalancer: %w", err)
	}
	claims, byKey := ServiceClaims(svcs.Items, func(s *corev1.Service, msg string) {
		r.recorder.Event(s, corev1.EventTypeWarning, "AddressNotAssigned", msg)
	})
	if r.other.Claims != nil {
		more, err := r.other.Claims(ctx)
		if err != nil {
			return reconcile.Result{}, err
		}
		claims = append(claims, more...)
	}
	res := r.ledger.Assign(in, claims)
	var errs []error
	for key, s := range byKey {
		var want []corev1.LoadBalancerIngress
		if a, ok := res.Addresses[key]; ok {
			want = []corev1.LoadBalancerIngress{{IP: a.String(), IPMode: ptrTo(corev1.LoadBalancerIPModeVIP)}}
		} else if msg, ok := res.Problems[key]; ok {
			r.recorder.Event(s, corev1.EventTypeWarning, "AddressNotAssigned", msg)
		}
		if equality.Semantic.DeepEqual(s.Status.LoadBalancer.Ingress, want) {
			continue
		}
		s = s.DeepCopy()
		s.Status.LoadBalancer.Ingress = want
		if err := r.c.Status().Update(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("update status of service %s: %w", key, err))
			continue
		}
		r.log.Info("load-balancer address", "service", key, "ingress", want)
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		st := v1alpha1.LoadBalancerIPPoolStatus{Conditions: append([]metav1.Condition(nil), p.Status.Conditions...)}
		set := func(t string, on bool, reason, msg string) {
			c := metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: p.Generation}
			if on {
				c.Status = metav1.ConditionTrue
			}
			meta.SetStatusCondition(&st.Conditions, c)
		}
		if err := invalid[p.Name]; err != nil {
			set(v1alpha1.PoolConditionValid, false, "Invalid", err.Error())
		} else {
			set(v1alpha1.PoolConditionValid, true, "Valid", "every block is valid")
		}
		if ps := res.Pools[p.Name]; ps != nil {
			st.Total, st.Used = ps.Total, ps.Used
			if ps.ConflictsWith != "" {
				set(v1alpha1.PoolConditionConflict, true, "Overlap", fmt.Sprintf("addresses overlap those of the pool %q, which is older: this pool assigns none", ps.ConflictsWith))
			} else {
				set(v1alpha1.PoolConditionConflict, false, "NoOverlap", "no other pool has these addresses")
				if !p.Spec.Disabled {
					st.Available = st.Total - st.Used
				}
			}
			if ps.Exhausted {
				set(v1alpha1.PoolConditionExhausted, true, "Exhausted", "a Service, Gateway or Ingress selected by the pool got no address: every address is in use")
			} else {
				set(v1alpha1.PoolConditionExhausted, false, "AddressesLeft", fmt.Sprintf("%d of %d addresses in use", st.Used, st.Total))
			}
		}
		if equality.Semantic.DeepEqual(p.Status, st) {
			continue
		}
		p.Status = st
		if err := r.c.Status().Update(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("update status of load-balancer IP pool %s: %w", p.Name, err))
		}
	}
	return reconcile.Result{}, errors.Join(errs...)
}

func ptrTo[T any](v T) *T { return &v }

package operator

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/policy/convert"
)

// maxConditionMessage is the API's limit on a condition message, in bytes.
const maxConditionMessage = 32768

const validMessage = "policy is valid"

// PolicyStatusController sets the Valid and Programmed conditions of
// MembraneNetworkPolicy and MembraneClusterwideNetworkPolicy objects.
//
// A policy is valid when the converters the agent enforces policies with
// accept it; otherwise the condition's message lists the fields at fault.
//
// Programmed reports what the node proxies made of a policy's L7 rules,
// from the AnnotationProxyRejected annotations the agents set on their
// Nodes: False (reason ProxyRejected) while a node's Envoy rejects a
// configuration made from the policy, else True for a policy with HTTP
// rules. It is also False (reason Unsupported) for a policy that uses
// fields Membrane does not implement yet (e.g. authentication.mode
// required), naming each field and what happens to the traffic instead. A
// policy with none of these keeps the Programmed condition it has, except
// that a ProxyRejected or Unsupported one is deleted once it no longer
// applies: the operator has nothing to say about programming that does not
// involve the proxies.
//
// A policy's status is written at most once per WriteInterval: the
// writes of a burst of changes are coalesced into the last state. Each
// write of a large policy costs the API server as much as the user's own
// write (it decodes, validates and stores the whole object again, and
// every watcher decodes it again).
type PolicyStatusController struct {
	// MutualAuth says the cluster's agents hold SPIFFE identities (the
	// built-in CA runs): ingress rules requiring authentication are mutual
	// TLS, not drops. Set before Setup.
	MutualAuth bool
	// WriteInterval is the least time between two status writes of one
	// policy (DefaultStatusWriteInterval). Set before Setup.
	WriteInterval time.Duration

	namespaced  policyStatusReconciler[*v1alpha1.MembraneNetworkPolicy]
	clusterwide policyStatusReconciler[*v1alpha1.MembraneClusterwideNetworkPolicy]
}

// DefaultStatusWriteInterval is PolicyStatusController's WriteInterval.
const DefaultStatusWriteInterval = time.Second

// NewPolicyStatusController returns the controller; Setup registers it.
func NewPolicyStatusController(log *slog.Logger, c client.Client) *PolicyStatusController {
	ctrl := &PolicyStatusController{}
	writes := func() *statusWrites {
		return &statusWrites{interval: &ctrl.WriteInterval, now: time.Now, last: map[types.NamespacedName]time.Time{}}
	}
	*ctrl = PolicyStatusController{
		WriteInterval: DefaultStatusWriteInterval,
		namespaced: policyStatusReconciler[*v1alpha1.MembraneNetworkPolicy]{
			writes:     writes(),
			log:        log.With("kind", convert.KindMembraneNetworkPolicy),
			c:          c,
			kind:       convert.KindMembraneNetworkPolicy,
			namespaced: true,
			newObj:     func() *v1alpha1.MembraneNetworkPolicy { return &v1alpha1.MembraneNetworkPolicy{} },
			check: func(p *v1alpha1.MembraneNetworkPolicy) (*v1alpha1.PolicyStatus, field.ErrorList) {
				_, errs := convert.FromMembranePolicy(p)
				return &p.Status, errs
			},
			unsupported: func(p *v1alpha1.MembraneNetworkPolicy) []string {
				return unsupportedFields(p.Spec, p.Specs, ctrl.MutualAuth)
			},
		},
		clusterwide: policyStatusReconciler[*v1alpha1.MembraneClusterwideNetworkPolicy]{
			writes: writes(),
			log:    log.With("kind", convert.KindMembraneClusterwideNetworkPolicy),
			c:      c,
			kind:   convert.KindMembraneClusterwideNetworkPolicy,
			newObj: func() *v1alpha1.MembraneClusterwideNetworkPolicy { return &v1alpha1.MembraneClusterwideNetworkPolicy{} },
			check: func(p *v1alpha1.MembraneClusterwideNetworkPolicy) (*v1alpha1.PolicyStatus, field.ErrorList) {
				_, errs := convert.FromMembraneClusterwidePolicy(p)
				return &p.Status, errs
			},
			unsupported: func(p *v1alpha1.MembraneClusterwideNetworkPolicy) []string {
				return unsupportedFields(p.Spec, p.Specs, ctrl.MutualAuth)
			},
		},
	}
	return ctrl
}

// Setup indexes Nodes by the policies their proxies reject and registers one
// reconciler per policy kind. Nodes are cached as metadata only.
func (r *PolicyStatusController) Setup(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, nodeMetadata(), rejectedPolicyIndex, rejectedPolicies); err != nil {
		return fmt.Errorf("index nodes by rejected policy: %w", err)
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("policy-status").
		For(&v1alpha1.MembraneNetworkPolicy{}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.namespaced.rejectedByNode),
			builder.OnlyMetadata, builder.WithPredicates(r.namespaced.rejectionChanged())).
		Complete(&r.namespaced)
	if err != nil {
		return fmt.Errorf("set up policy status controller: %w", err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("clusterwide-policy-status").
		For(&v1alpha1.MembraneClusterwideNetworkPolicy{}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.clusterwide.rejectedByNode),
			builder.OnlyMetadata, builder.WithPredicates(r.clusterwide.rejectionChanged())).
		Complete(&r.clusterwide)
	if err != nil {
		return fmt.Errorf("set up clusterwide policy status controller: %w", err)
	}
	return nil
}

// policyObject is what both policy kinds offer the reconciler.
type policyObject interface {
	client.Object
	Rules() []v1alpha1.Rule
}

// policyStatusReconciler sets the Valid and Programmed conditions of one
// policy kind.
type policyStatusReconciler[P policyObject] struct {
	log *slog.Logger
	c   client.Client
	// kind names the policy kind in ProxyRejection.Policies; namespaced is
	// whether its objects have a namespace.
	kind       string
	namespaced bool
	newObj     func() P
	// check returns the policy's status, to be changed in place, and the
	// errors that make it invalid.
	check func(P) (*v1alpha1.PolicyStatus, field.ErrorList)
	// unsupported lists the fields the policy uses that Membrane does not
	// implement (see unsupportedFields).
	unsupported func(P) []string
	writes      *statusWrites
}

// statusWrites spaces the status writes of each policy by an interval (the
// controller's WriteInterval).
type statusWrites struct {
	interval *time.Duration
	now      func() time.Time
	mu       sync.Mutex
	last     map[types.NamespacedName]time.Time
}

// wait returns how long key's next write must wait (0: not at all).
func (w *statusWrites) wait(key types.NamespacedName) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, ok := w.last[key]
	if !ok {
		return 0
	}
	return max(0, *w.interval-w.now().Sub(last))
}

// wrote records a write of key's status now.
func (w *statusWrites) wrote(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last[key] = w.now()
}

// forget drops key (the policy is gone).
func (w *statusWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, key)
}

// Reconcile writes the policy's Valid and Programmed conditions and observed
// generation when they differ from what the policy's status holds, or
// requeues the policy until its last write is WriteInterval old. A
// conflict (the policy changed since it was read) is requeued, so the
// request is retried on the newer object.
func (r *policyStatusReconciler[P]) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := r.newObj()
	if err := r.c.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.writes.forget(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	status, errs := r.check(obj)
	gen := obj.GetGeneration()
	changed := meta.SetStatusCondition(&status.Conditions, validCondition(errs, gen))
	rejections, err := r.rejections(ctx, v1alpha1.PolicyRef(r.kind, obj.GetNamespace(), obj.GetName()))
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("programmed condition of policy %s: %w", req.NamespacedName, err)
	}
	if setProgrammed(&status.Conditions, rejections, r.unsupported(obj), hasHTTPRules(obj.Rules()), gen) {
		changed = true
	}
	if status.ObservedGeneration != gen {
		status.ObservedGeneration = gen
		changed = true
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	if wait := r.writes.wait(req.NamespacedName); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	if err := r.c.Status().Update(ctx, obj); err != nil {
		if apierrors.IsConflict(err) {
			// The policy changed since it was read (its spec, or another
			// writer): the newer object's event brings it back anyway;
			// requeued so it is not lost, without an error.
			r.log.Debug("policy changed before its status was written; requeued", "policy", req.NamespacedName)
			return reconcile.Result{Requeue: true}, nil
		}
		return reconcile.Result{}, fmt.Errorf("update status of policy %s: %w", req.NamespacedName, err)
	}
	r.writes.wrote(req.NamespacedName)
	r.log.Debug("policy status updated", "policy", req.NamespacedName, "generation", gen,
		"valid", len(errs) == 0, "rejectingNodes", len(rejections))
	return reconcile.Result{}, nil
}

// validCondition is the Valid condition for a policy with errs.
func validCondition(errs field.ErrorList, generation int64) metav1.Condition {
	if len(errs) == 0 {
		return metav1.Condition{
			Type:               v1alpha1.ConditionValid,
			Status:             metav1.ConditionTrue,
			Reason:             v1alpha1.ReasonValid,
			Message:            validMessage,
			ObservedGeneration: generation,
		}
	}
	return metav1.Condition{
		Type:               v1alpha1.ConditionValid,
		Status:             metav1.ConditionFalse,
		Reason:             v1alpha1.ReasonInvalid,
		Message:            errorsMessage(errs, maxConditionMessage),
		ObservedGeneration: generation,
	}
}

// errorsMessage joins the errors with "; " in at most limit bytes. Errors that
// do not fit are counted at the end; the first error is cut short rather
// than left out.
func errorsMessage(errs field.ErrorList, limit int) string {
	texts := make([]string, len(errs))
	for i, e := range errs {
		texts[i] = e.Error()
	}
	return joinMessages(texts, "error", limit)
}

// joinMessages joins parts with "; " in at most limit bytes. Parts that do
// not fit are counted at the end, as more nouns; the first part is cut short
// rather than left out.
func joinMessages(parts []string, noun string, limit int) string {
	var b strings.Builder
	for i, text := range parts {
		sep := ""
		if i > 0 {
			sep = "; "
		}
		more := len(parts) - i - 1
		// Room for this part and, if others follow, for counting them.
		room := limit - b.Len() - len(moreNote(more, noun))
		if len(sep)+len(text) <= room {
			b.WriteString(sep)
			b.WriteString(text)
			continue
		}
		if i == 0 {
			b.WriteString(truncate(text, limit-len(moreNote(more, noun))-len("…")))
			b.WriteString("…")
			b.WriteString(moreNote(more, noun))
			return b.String()
		}
		b.WriteString(moreNote(len(parts)-i, noun))
		return b.String()
	}
	return b.String()
}

// moreNote is the note for n parts (nouns) left out of a message.
func moreNote(n int, noun string) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "; and 1 more " + noun
	}
	return fmt.Sprintf("; and %d more %ss", n, noun)
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

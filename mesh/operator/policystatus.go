package operator

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/policy/convert"
)

// maxConditionMessage is the API's limit on a condition message, in bytes.
const maxConditionMessage = 32768

const validMessage = "policy is valid"

// PolicyStatusController sets the Valid condition of MembraneNetworkPolicy
// and MembraneClusterwideNetworkPolicy objects. A policy is valid when the
// converters the agent enforces policies with accept it; otherwise the
// condition's message lists the fields at fault. The Programmed condition is
// left to the agents.
type PolicyStatusController struct {
	namespaced  policyStatusReconciler[*v1alpha1.MembraneNetworkPolicy]
	clusterwide policyStatusReconciler[*v1alpha1.MembraneClusterwideNetworkPolicy]
}

// NewPolicyStatusController returns the controller; Setup registers it.
func NewPolicyStatusController(log *slog.Logger, c client.Client) *PolicyStatusController {
	return &PolicyStatusController{
		namespaced: policyStatusReconciler[*v1alpha1.MembraneNetworkPolicy]{
			log:    log.With("kind", convert.KindMembraneNetworkPolicy),
			c:      c,
			newObj: func() *v1alpha1.MembraneNetworkPolicy { return &v1alpha1.MembraneNetworkPolicy{} },
			check: func(p *v1alpha1.MembraneNetworkPolicy) (*v1alpha1.PolicyStatus, field.ErrorList) {
				_, errs := convert.FromMembranePolicy(p)
				return &p.Status, errs
			},
		},
		clusterwide: policyStatusReconciler[*v1alpha1.MembraneClusterwideNetworkPolicy]{
			log:    log.With("kind", convert.KindMembraneClusterwideNetworkPolicy),
			c:      c,
			newObj: func() *v1alpha1.MembraneClusterwideNetworkPolicy { return &v1alpha1.MembraneClusterwideNetworkPolicy{} },
			check: func(p *v1alpha1.MembraneClusterwideNetworkPolicy) (*v1alpha1.PolicyStatus, field.ErrorList) {
				_, errs := convert.FromMembraneClusterwidePolicy(p)
				return &p.Status, errs
			},
		},
	}
}

// Setup registers one reconciler per policy kind.
func (r *PolicyStatusController) Setup(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named("policy-status").
		For(&v1alpha1.MembraneNetworkPolicy{}).
		Complete(&r.namespaced)
	if err != nil {
		return fmt.Errorf("set up policy status controller: %w", err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("clusterwide-policy-status").
		For(&v1alpha1.MembraneClusterwideNetworkPolicy{}).
		Complete(&r.clusterwide)
	if err != nil {
		return fmt.Errorf("set up clusterwide policy status controller: %w", err)
	}
	return nil
}

// policyStatusReconciler sets the Valid condition of one policy kind.
type policyStatusReconciler[P client.Object] struct {
	log    *slog.Logger
	c      client.Client
	newObj func() P
	// check returns the policy's status, to be changed in place, and the
	// errors that make it invalid.
	check func(P) (*v1alpha1.PolicyStatus, field.ErrorList)
}

// Reconcile writes the policy's Valid condition and observed generation
// when they differ from what the policy's status holds. A conflict is
// returned, so the request is retried on the newer object.
func (r *policyStatusReconciler[P]) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := r.newObj()
	if err := r.c.Get(ctx, req.NamespacedName, obj); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	status, errs := r.check(obj)
	gen := obj.GetGeneration()
	changed := meta.SetStatusCondition(&status.Conditions, validCondition(errs, gen))
	if status.ObservedGeneration != gen {
		status.ObservedGeneration = gen
		changed = true
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	if err := r.c.Status().Update(ctx, obj); err != nil {
		return reconcile.Result{}, fmt.Errorf("update status of policy %s: %w", req.NamespacedName, err)
	}
	r.log.Debug("policy status updated", "policy", req.NamespacedName, "generation", gen, "valid", len(errs) == 0)
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
	var b strings.Builder
	for i, e := range errs {
		sep := ""
		if i > 0 {
			sep = "; "
		}
		text := e.Error()
		more := len(errs) - i - 1
		// Room for this error and, if others follow, for counting them.
		room := limit - b.Len() - len(moreErrors(more))
		if len(sep)+len(text) <= room {
			b.WriteString(sep)
			b.WriteString(text)
			continue
		}
		if i == 0 {
			b.WriteString(truncate(text, limit-len(moreErrors(more))-len("…")))
			b.WriteString("…")
			b.WriteString(moreErrors(more))
			return b.String()
		}
		b.WriteString(moreErrors(len(errs) - i))
		return b.String()
	}
	return b.String()
}

// moreErrors is the note for n errors left out of a message.
func moreErrors(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "; and 1 more error"
	}
	return fmt.Sprintf("; and %d more errors", n)
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

package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/membrane-mesh/membrane/gateway/translate"
)

// writeIngress writes an Ingress's status.loadBalancer.ingress and records
// an Event for each problem that is new since the last pass (a problem
// that stays is not repeated).
func (r *Reconciler) writeIngress(ctx context.Context, s translate.IngressStatus) error {
	var ing networkingv1.Ingress
	if err := r.c.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, &ing); err != nil {
		return client.IgnoreNotFound(err)
	}
	key := s.Namespace + "/" + s.Name + "/" + string(ing.UID)
	seen := r.ingressProblems[key]
	for _, p := range s.Problems {
		if r.events != nil && !slices.Contains(seen, p) {
			r.events.Event(&ing, corev1.EventTypeWarning, "Invalid", p)
		}
	}
	r.ingressProblems[key] = slices.Clone(s.Problems)
	var want []networkingv1.IngressLoadBalancerIngress
	if s.Address != "" {
		want = []networkingv1.IngressLoadBalancerIngress{{IP: s.Address}}
	}
	if equality.Semantic.DeepEqual(ing.Status.LoadBalancer.Ingress, want) {
		return nil
	}
	ing.Status.LoadBalancer.Ingress = want
	if err := r.c.Status().Update(ctx, &ing); err != nil {
		return fmt.Errorf("update Ingress %s/%s status: %w", ing.Namespace, ing.Name, err)
	}
	r.log.Info("ingress status updated", "ingress", s.Namespace+"/"+s.Name, "address", s.Address, "mode", s.Mode,
		"problems", strings.Join(s.Problems, "; "))
	return nil
}

// forgetIngresses drops the remembered problems of Ingresses that are gone.
func (r *Reconciler) forgetIngresses(ings []networkingv1.Ingress) {
	live := map[string]bool{}
	for _, ing := range ings {
		live[ing.Namespace+"/"+ing.Name+"/"+string(ing.UID)] = true
	}
	for k := range r.ingressProblems {
		if !live[k] {
			delete(r.ingressProblems, k)
		}
	}
}

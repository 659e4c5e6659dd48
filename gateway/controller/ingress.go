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

	"github.com/membrane-mesh/membrane/gateway/ipam"
	"github.com/membrane-mesh/membrane/gateway/translate"
)

// ingressInput lists the Ingresses and IngressClasses into in and returns
// the address requests of Membrane's Ingresses: one per dedicated Ingress,
// one for all shared ones (the oldest Ingress's time; the address one of
// them has).
func (r *Reconciler) ingressInput(ctx context.Context, in *translate.Input) ([]ipam.Gateway, error) {
	var (
		ings    networkingv1.IngressList
		classes networkingv1.IngressClassList
	)
	for _, l := range []client.ObjectList{&ings, &classes} {
		if err := r.c.List(ctx, l); err != nil {
			return nil, fmt.Errorf("list %T: %w", l, err)
		}
	}
	in.Ingresses, in.IngressClasses = ings.Items, classes.Items
	owned := translate.OwnedIngresses(in.IngressClasses, in.Ingresses)
	current := translate.IngressAddressesFromStatus(owned)
	byKey := map[types.NamespacedName]int{}
	var req []ipam.Gateway
	for _, o := range owned {
		created := o.Ingress.CreationTimestamp.UnixNano()
		if i, ok := byKey[o.Key]; ok {
			req[i].Created = min(req[i].Created, created)
			continue
		}
		byKey[o.Key] = len(req)
		req = append(req, ipam.Gateway{Name: o.Key, Current: current[o.Key], Created: created})
	}
	return req, nil
}

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

package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/gateway/translate"
)

// secretRefIndex and configMapRefIndex are the field indexes of the
// Secrets (Gateways' certificate references, Ingresses' TLS secretName)
// and ConfigMaps (BackendTLSPolicies' and Gateways' client validation's CA
// certificate references) an object
// refers to, as "namespace/name". The translation reads no other Secret or
// ConfigMap, so the events of the others (most of a cluster's) reconcile
// nothing.
const (
	secretRefIndex    = "membrane.secretRefs"
	configMapRefIndex = "membrane.configMapRefs"
)

func secretReferrers() []referrer {
	return []referrer{
		{&gwv1.Gateway{}, func() client.ObjectList { return &gwv1.GatewayList{} }, gatewaySecrets},
		{&networkingv1.Ingress{}, func() client.ObjectList { return &networkingv1.IngressList{} }, ingressSecrets},
	}
}

func configMapReferrers() []referrer {
	return []referrer{
		{&gwv1.BackendTLSPolicy{}, func() client.ObjectList { return &gwv1.BackendTLSPolicyList{} }, policyConfigMaps},
		{&gwv1.Gateway{}, func() client.ObjectList { return &gwv1.GatewayList{} }, gatewayConfigMaps},
	}
}

// gatewayConfigMaps indexes a Gateway by the ConfigMaps of its client
// certificate validation's CA references (spec.tls.frontend; in its
// namespace unless the reference names another).
func gatewayConfigMaps(o client.Object) []string {
	gw, ok := o.(*gwv1.Gateway)
	if !ok || gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil
	}
	f := gw.Spec.TLS.Frontend
	validations := []*gwv1.FrontendTLSValidation{f.Default.Validation}
	for _, p := range f.PerPort {
		validations = append(validations, p.TLS.Validation)
	}
	var keys []string
	for _, v := range validations {
		if v == nil {
			continue
		}
		for _, ref := range v.CACertificateRefs {
			if ref.Group == "" && ref.Kind == "ConfigMap" {
				keys = append(keys, refKey(gw.Namespace, ref.Namespace, ref.Name))
			}
		}
	}
	return sortedKeys(keys)
}

// gatewaySecrets indexes a Gateway by the Secrets of its listeners'
// certificate references and of its backend client certificate
// (spec.tls.backend; in its namespace unless the reference names
// another; whether a ReferenceGrant allows that is the translation's
// concern).
func gatewaySecrets(o client.Object) []string {
	gw, ok := o.(*gwv1.Gateway)
	if !ok {
		return nil
	}
	refs := []gwv1.SecretObjectReference{}
	for _, l := range gw.Spec.Listeners {
		if l.TLS != nil {
			refs = append(refs, l.TLS.CertificateRefs...)
		}
	}
	if t := gw.Spec.TLS; t != nil && t.Backend != nil && t.Backend.ClientCertificateRef != nil {
		refs = append(refs, *t.Backend.ClientCertificateRef)
	}
	var keys []string
	for _, ref := range refs {
		if (ref.Group == nil || *ref.Group == "") && (ref.Kind == nil || *ref.Kind == "Secret") {
			keys = append(keys, refKey(gw.Namespace, ref.Namespace, ref.Name))
		}
	}
	return sortedKeys(keys)
}

// refKey is the "namespace/name" key of a reference from an object in
// namespace from: in ns when given.
func refKey(from string, ns *gwv1.Namespace, name gwv1.ObjectName) string {
	if ns != nil {
		from = string(*ns)
	}
	return from + "/" + string(name)
}

// ingressSecrets indexes an Ingress by the Secrets of its TLS entries (in
// its namespace).
func ingressSecrets(o client.Object) []string {
	ing, ok := o.(*networkingv1.Ingress)
	if !ok {
		return nil
	}
	var keys []string
	for _, t := range ing.Spec.TLS {
		if t.SecretName != "" {
			keys = append(keys, ing.Namespace+"/"+t.SecretName)
		}
	}
	return sortedKeys(keys)
}

// policyConfigMaps indexes a BackendTLSPolicy by the ConfigMaps of its CA
// certificate references (in its namespace).
func policyConfigMaps(o client.Object) []string {
	p, ok := o.(*gwv1.BackendTLSPolicy)
	if !ok {
		return nil
	}
	var keys []string
	for _, ref := range p.Spec.Validation.CACertificateRefs {
		if ref.Group == "" && ref.Kind == "ConfigMap" {
			keys = append(keys, p.Namespace+"/"+string(ref.Name))
		}
	}
	return sortedKeys(keys)
}

func sortedKeys(keys []string) []string {
	slices.Sort(keys)
	return slices.Compact(keys)
}

// dataEvents maps a Secret's or ConfigMap's event to the work item when
// an object of a referring kind refers to it (c must hold their index
// field), or when it is one of the copies in copiesNS (gateway/synced),
// which the controller keeps equal to their sources.
func dataEvents(log *slog.Logger, c client.Reader, field string, referrers []referrer, copiesNS string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		if copiesNS != "" && o.GetNamespace() == copiesNS && o.GetLabels()[synced.LabelKind] != "" {
			return []reconcile.Request{workItem()}
		}
		if referredTo(ctx, log, c, field, o, referrers) {
			return []reconcile.Request{workItem()}
		}
		return nil
	}
}

// referencedData gets the Secrets and ConfigMaps that the Gateways,
// Ingresses and BackendTLSPolicies of in refer to, those that exist: the
// translation reads no others, and listing every one of a cluster's would
// copy them all on every reconcile.
func referencedData(ctx context.Context, c client.Reader, in *translate.Input) error {
	var secrets, cms []string
	for i := range in.Gateways {
		secrets = append(secrets, gatewaySecrets(&in.Gateways[i])...)
		cms = append(cms, gatewayConfigMaps(&in.Gateways[i])...)
	}
	for i := range in.Ingresses {
		secrets = append(secrets, ingressSecrets(&in.Ingresses[i])...)
	}
	for i := range in.BackendTLSPolicies {
		cms = append(cms, policyConfigMaps(&in.BackendTLSPolicies[i])...)
	}
	var err error
	if in.Secrets, err = getExisting[corev1.Secret](ctx, c, sortedKeys(secrets)); err != nil {
		return err
	}
	in.ConfigMaps, err = getExisting[corev1.ConfigMap](ctx, c, sortedKeys(cms))
	return err
}

// getExisting gets the objects of keys ("namespace/name"), leaving out
// those not found.
func getExisting[T any, P interface {
	*T
	client.Object
}](ctx context.Context, c client.Reader, keys []string) ([]T, error) {
	var out []T
	for _, k := range keys {
		ns, name, _ := strings.Cut(k, "/")
		var o T
		err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, P(&o))
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("get %T %s: %w", P(&o), k, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// TrimConfigMap is the operator cache's transform of ConfigMaps: of their
// data it keeps what the translation and the copies read (ca.crt; a
// copy's binary data, which makes it differ from its source), and drops
// their managed fields. The cache holds every ConfigMap of the cluster.
func TrimConfigMap(o any) (any, error) {
	cm, ok := o.(*corev1.ConfigMap)
	if !ok {
		return o, nil
	}
	cm.ManagedFields = nil
	if v, ok := cm.Data[translate.CACertKey]; ok {
		cm.Data = map[string]string{translate.CACertKey: v}
	} else {
		cm.Data = nil
	}
	if cm.Labels[synced.LabelKind] == "" {
		cm.BinaryData = nil
	}
	return cm, nil
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/membrane-mesh/membrane/gateway/synced"
	"github.com/membrane-mesh/membrane/gateway/translate"
)

// syncCopies makes the copies in the secrets namespace the Secrets and
// ConfigMaps of in the translation read, refs (gateway/synced): created,
// updated when their source changed, deleted when no longer referenced or
// their source is gone. The node agents read only these copies.
func (r *Reconciler) syncCopies(ctx context.Context, in translate.Input, refs translate.References) error {
	ns := r.cfg.SecretsNamespace
	if ns == "" {
		return nil
	}
	wantS, wantC := synced.Desired(in, refs, ns)
	var haveS corev1.SecretList
	var haveC corev1.ConfigMapList
	for _, l := range []client.ObjectList{&haveS, &haveC} {
		if err := r.c.List(ctx, l, client.InNamespace(ns), client.HasLabels{synced.LabelKind}); err != nil {
			return fmt.Errorf("list the copies in %s: %w", ns, err)
		}
	}
	return errors.Join(
		syncObjects(ctx, r, wantS, haveS.Items, func(w, h *corev1.Secret) bool {
			return w.Type == h.Type && equality.Semantic.DeepEqual(w.Data, h.Data)
		}),
		syncObjects(ctx, r, wantC, haveC.Items, func(w, h *corev1.ConfigMap) bool {
			return equality.Semantic.DeepEqual(w.Data, h.Data) && len(h.BinaryData) == 0
		}))
}

// syncObjects creates the objects of want not in have, updates those whose
// content (same), labels or annotations differ and deletes those of have
// not in want.
func syncObjects[T any, P interface {
	*T
	client.Object
}](ctx context.Context, r *Reconciler, want, have []T, same func(w, h P) bool) error {
	byName := make(map[string]P, len(have))
	for i := range have {
		byName[P(&have[i]).GetName()] = &have[i]
	}
	var errs []error
	for i := range want {
		w := P(&want[i])
		h, ok := byName[w.GetName()]
		delete(byName, w.GetName())
		switch {
		case !ok:
			if err := r.c.Create(ctx, w); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("create copy %s/%s: %w", w.GetNamespace(), w.GetName(), err))
				continue
			}
			r.log.Info("copy created", "copy", w.GetNamespace()+"/"+w.GetName())
		case !same(w, h) || !maps.Equal(w.GetLabels(), h.GetLabels()) || !maps.Equal(w.GetAnnotations(), h.GetAnnotations()):
			w.SetResourceVersion(h.GetResourceVersion())
			if err := r.c.Update(ctx, w); err != nil {
				errs = append(errs, fmt.Errorf("update copy %s/%s: %w", w.GetNamespace(), w.GetName(), err))
				continue
			}
			r.log.Info("copy updated", "copy", w.GetNamespace()+"/"+w.GetName())
		}
	}
	for _, h := range byName {
		if err := r.c.Delete(ctx, h); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete copy %s/%s: %w", h.GetNamespace(), h.GetName(), err))
			continue
		}
		r.log.Info("copy deleted", "copy", h.GetNamespace()+"/"+h.GetName())
	}
	return errors.Join(errs...)
}

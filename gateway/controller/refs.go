package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// referrer is a kind whose objects refer to objects of another kind
// (Services, Secrets, ConfigMaps): how to index its objects by the
// "namespace/name" of those they refer to, and a list of it to query the
// index with.
type referrer struct {
	obj   client.Object
	list  func() client.ObjectList
	index client.IndexerFunc
}

// crdWait bounds how long indexRefs waits for a referring kind to be
// served: CRDs installed together with the operator (the chart's
// gatewayAPI.crds) are established one by one, in any order.
const crdWait = 2 * time.Minute

// indexRefs registers the field index field on every referring kind,
// waiting up to crdWait for a kind the API server does not serve yet.
func indexRefs(ctx context.Context, log *slog.Logger, indexer client.FieldIndexer, field string, referrers []referrer) error {
	for _, r := range referrers {
		waited := false
		err := wait.PollUntilContextTimeout(ctx, time.Second, crdWait, true, func(ctx context.Context) (bool, error) {
			err := indexer.IndexField(ctx, r.obj, field, r.index)
			if meta.IsNoMatchError(err) {
				if !waited {
					log.Info("waiting for the kind to be served", "kind", fmt.Sprintf("%T", r.obj), "reason", err)
					waited = true
				}
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			return fmt.Errorf("index %T by %s: %w", r.obj, field, err)
		}
	}
	return nil
}

// referredTo reports whether an object of a referring kind refers to o (c
// must hold their index field). An index that cannot be read counts as a
// reference: reconciling once too often is harmless, missing a change is
// not.
func referredTo(ctx context.Context, log *slog.Logger, c client.Reader, field string, o client.Object, referrers []referrer) bool {
	key := o.GetNamespace() + "/" + o.GetName()
	for _, r := range referrers {
		l := r.list()
		if err := c.List(ctx, l, client.MatchingFields{field: key}); err != nil {
			log.Warn("list the objects referring to an object", "object", key, "index", field, "kind", fmt.Sprintf("%T", r.obj), "error", err)
			return true
		}
		if meta.LenList(l) > 0 {
			return true
		}
	}
	return false
}

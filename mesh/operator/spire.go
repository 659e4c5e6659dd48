package operator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SPIREEntryHint marks the registration entries the registrar owns; it
// never touches entries without it.
const SPIREEntryHint = "membrane"

// SPIREConfig configures the registration of workload identities in a
// SPIRE server.
type SPIREConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Cluster is the k8s_psat cluster name the SPIRE agents attest with.
	Cluster string
	// AgentNamespace and AgentServiceAccount are the Membrane agents', whose
	// entry on every node makes them the SPIRE agents' authorized delegates.
	AgentNamespace      string
	AgentServiceAccount string
	// DelegateSelectors select the Membrane agent's process for its
	// delegate entry, "type:value" each (empty: k8s:ns and k8s:sa of the
	// agent's pods, for the SPIRE agent's k8s workload attestor).
	DelegateSelectors []string
	// SVIDTTL is the X.509-SVID lifetime of workload entries (0: the
	// server's default).
	SVIDTTL  time.Duration
	Interval time.Duration
}

// NodeAlias is the SPIFFE ID of the node alias entry of node (SPIRE
// reserves /spire/ for its own IDs): the parent
// of the node's workload entries, held by the SPIRE agent attested (with
// k8s_psat) on that node.
func NodeAlias(td spiffeid.TrustDomain, node string) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/membrane/node/"+node)
}

// DelegateID is the SPIFFE ID of the Membrane agents, the SPIRE agents'
// authorized delegates.
func DelegateID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/membrane/agent")
}

// entryKey identifies an entry by what it grants.
func entryKey(e *types.Entry) string {
	sel := make([]string, 0, len(e.GetSelectors()))
	for _, s := range e.GetSelectors() {
		sel = append(sel, s.GetType()+":"+s.GetValue())
	}
	slices.Sort(sel)
	return fmt.Sprintf("%s/%s|%s/%s|%s|%d", e.GetSpiffeId().GetTrustDomain(), e.GetSpiffeId().GetPath(),
		e.GetParentId().GetTrustDomain(), e.GetParentId().GetPath(), strings.Join(sel, ","), e.GetX509SvidTtl())
}

func sid(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// DesiredEntries are the registration entries for pods: per node with
// pods, its alias (selected by k8s_psat on the node's name) and the
// Membrane agent's delegate entry; per service account with a running pod
// on a node, a workload entry spiffe://<td>/ns/<ns>/sa/<sa> (selectors
// k8s:ns and k8s:sa) parented to that node's alias only, so a SPIRE agent
// holds exactly the identities of its node's pods. Host-network and
// terminated pods have no identity.
func DesiredEntries(cfg SPIREConfig, pods []corev1.Pod) []*types.Entry {
	server := spiffeid.RequireFromPath(cfg.TrustDomain, "/spire/server")
	ttl := int32(cfg.SVIDTTL / time.Second)
	seen := map[string]bool{}
	var out []*types.Entry
	add := func(e *types.Entry) {
		e.Hint = SPIREEntryHint
		if k := entryKey(e); !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	for _, p := range pods {
		node := p.Spec.NodeName
		if node == "" || p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodRunning ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		alias := NodeAlias(cfg.TrustDomain, node)
		add(&types.Entry{
			SpiffeId: sid(alias), ParentId: sid(server),
			Selectors: []*types.Selector{
				{Type: "k8s_psat", Value: "cluster:" + cfg.Cluster},
				{Type: "k8s_psat", Value: "agent_node_name:" + node},
			},
		})
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if p.Namespace == cfg.AgentNamespace && sa == cfg.AgentServiceAccount {
			sel := []*types.Selector{{Type: "k8s", Value: "ns:" + p.Namespace}, {Type: "k8s", Value: "sa:" + sa}}
			if len(cfg.DelegateSelectors) > 0 {
				sel = nil
				for _, s := range cfg.DelegateSelectors {
					typ, val, _ := strings.Cut(s, ":")
					sel = append(sel, &types.Selector{Type: typ, Value: val})
				}
			}
			add(&types.Entry{SpiffeId: sid(DelegateID(cfg.TrustDomain)), ParentId: sid(alias), Selectors: sel})
			continue
		}
		if p.Spec.HostNetwork {
			continue
		}
		add(&types.Entry{
			SpiffeId: sid(spiffeid.RequireFromPathf(cfg.TrustDomain, "/ns/%s/sa/%s", p.Namespace, sa)), ParentId: sid(alias),
			Selectors:   []*types.Selector{{Type: "k8s", Value: "ns:" + p.Namespace}, {Type: "k8s", Value: "sa:" + sa}},
			X509SvidTtl: ttl,
		})
	}
	slices.SortFunc(out, func(a, b *types.Entry) int { return strings.Compare(entryKey(a), entryKey(b)) })
	return out
}

// DiffEntries returns the entries to create and the IDs of the owned
// entries to delete to turn have into want.
func DiffEntries(have, want []*types.Entry) (create []*types.Entry, del []string) {
	haveKeys := map[string]bool{}
	wantKeys := map[string]bool{}
	for _, e := range want {
		wantKeys[entryKey(e)] = true
	}
	for _, e := range have {
		if e.GetHint() != SPIREEntryHint {
			continue
		}
		k := entryKey(e)
		if !wantKeys[k] || haveKeys[k] {
			del = append(del, e.GetId())
			continue
		}
		haveKeys[k] = true
	}
	for _, e := range want {
		if !haveKeys[entryKey(e)] {
			create = append(create, e)
		}
	}
	return create, del
}

// SPIRERegistrar keeps the SPIRE server's registration entries in step
// with the cluster's pods.
type SPIRERegistrar struct {
	log     *slog.Logger
	cfg     SPIREConfig
	c       client.Reader
	entries entryv1.EntryClient
}

// NewSPIRERegistrar returns a registrar writing through the SPIRE server's
// entry API.
func NewSPIRERegistrar(log *slog.Logger, cfg SPIREConfig, c client.Reader, entries entryv1.EntryClient) *SPIRERegistrar {
	return &SPIRERegistrar{log: log, cfg: cfg, c: c, entries: entries}
}

// Run reconciles every cfg.Interval until ctx ends.
func (r *SPIRERegistrar) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if err := r.Step(ctx); err != nil {
			r.log.Error("SPIRE registration entries", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step reconciles once.
func (r *SPIRERegistrar) Step(ctx context.Context) error {
	var pods corev1.PodList
	if err := r.c.List(ctx, &pods); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var have []*types.Entry
	for token := ""; ; {
		resp, err := r.entries.ListEntries(ctx, &entryv1.ListEntriesRequest{PageSize: 500, PageToken: token})
		if err != nil {
			return fmt.Errorf("list SPIRE entries: %w", err)
		}
		have = append(have, resp.GetEntries()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	create, del := DiffEntries(have, DesiredEntries(r.cfg, pods.Items))
	if len(del) > 0 {
		resp, err := r.entries.BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: del})
		if err != nil {
			return fmt.Errorf("delete %d SPIRE entries: %w", len(del), err)
		}
		for _, res := range resp.GetResults() {
			if c := codes.Code(res.GetStatus().GetCode()); c != codes.OK && c != codes.NotFound {
				return fmt.Errorf("delete SPIRE entry %s: %s", res.GetId(), res.GetStatus().GetMessage())
			}
		}
		r.log.Info("SPIRE entries deleted", "count", len(del))
	}
	if len(create) > 0 {
		resp, err := r.entries.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: create})
		if err != nil {
			return fmt.Errorf("create %d SPIRE entries: %w", len(create), err)
		}
		for i, res := range resp.GetResults() {
			if c := codes.Code(res.GetStatus().GetCode()); c != codes.OK && c != codes.AlreadyExists {
				return fmt.Errorf("create SPIRE entry %s: %s", entryKey(create[i]), res.GetStatus().GetMessage())
			}
		}
		r.log.Info("SPIRE entries created", "count", len(create))
	}
	return nil
}

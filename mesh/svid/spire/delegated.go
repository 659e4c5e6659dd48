// Package spire is an svid.Source backed by a SPIRE agent's Delegated
// Identity API: the node agent, an authorized delegate of the SPIRE agent,
// subscribes to the X.509-SVIDs of the service accounts of the node's pods
// (selectors k8s:ns and k8s:sa) and to the trust bundles.
package spire

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	delegatedv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/membrane-mesh/membrane/mesh/svid"
)

// retry is the wait before a broken subscription is opened again.
const retry = 2 * time.Second

// Selectors are the SPIRE workload selectors of a workload SPIFFE ID
// spiffe://<td>/ns/<ns>/sa/<sa>: k8s:ns:<ns> and k8s:sa:<sa>.
func Selectors(id spiffeid.ID) ([]*types.Selector, error) {
	segs := splitPath(id.Path())
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return nil, fmt.Errorf("SPIFFE ID %s: not a workload ID /ns/<namespace>/sa/<service account>", id)
	}
	return []*types.Selector{{Type: "k8s", Value: "ns:" + segs[1]}, {Type: "k8s", Value: "sa:" + segs[3]}}, nil
}

func splitPath(p string) []string {
	var out []string
	start := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

// Delegated keeps the SVIDs of the wanted SPIFFE IDs from a SPIRE agent's
// admin socket. It is an svid.Source.
type Delegated struct {
	log    *slog.Logger
	td     spiffeid.TrustDomain
	client delegatedv1.DelegatedIdentityClient

	mu      sync.Mutex
	wanted  map[spiffeid.ID]context.CancelFunc
	svids   map[spiffeid.ID]*x509svid.SVID
	bundle  *x509bundle.Bundle
	version uint64
	changed chan struct{}
	poke    chan struct{}
}

// Dial connects to the SPIRE agent's admin socket (unix path).
func Dial(socket string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("SPIRE agent admin socket %s: %w", socket, err)
	}
	return conn, nil
}

// NewDelegated returns a source for trust domain td using the agent's
// Delegated Identity API.
func NewDelegated(log *slog.Logger, td spiffeid.TrustDomain, client delegatedv1.DelegatedIdentityClient) *Delegated {
	return &Delegated{
		log: log, td: td, client: client,
		wanted:  map[spiffeid.ID]context.CancelFunc{},
		svids:   map[spiffeid.ID]*x509svid.SVID{},
		changed: make(chan struct{}),
		poke:    make(chan struct{}, 1),
	}
}

// Snapshot implements svid.Source.
func (d *Delegated) Snapshot() svid.Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[spiffeid.ID]*x509svid.SVID, len(d.svids))
	for id, s := range d.svids {
		out[id] = s
	}
	return svid.Snapshot{SVIDs: out, Bundle: d.bundle, Version: d.version}
}

// Changed implements svid.Source.
func (d *Delegated) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// bumpLocked publishes a change; d.mu is held.
func (d *Delegated) bumpLocked() {
	d.version++
	close(d.changed)
	d.changed = make(chan struct{})
}

// SetWanted sets the SPIFFE IDs to keep SVIDs for; Run opens and closes
// their subscriptions.
func (d *Delegated) SetWanted(ids []spiffeid.ID) {
	d.mu.Lock()
	want := map[spiffeid.ID]bool{}
	for _, id := range ids {
		want[id] = true
		if _, ok := d.wanted[id]; !ok {
			d.wanted[id] = nil // opened by Run
		}
	}
	dropped := false
	for id, cancel := range d.wanted {
		if want[id] {
			continue
		}
		if cancel != nil {
			cancel()
		}
		delete(d.wanted, id)
		if _, ok := d.svids[id]; ok {
			delete(d.svids, id)
			dropped = true
		}
	}
	if dropped {
		d.bumpLocked()
	}
	d.mu.Unlock()
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

// Run keeps the bundle subscription and one SVID subscription per wanted
// SPIFFE ID until ctx ends.
func (d *Delegated) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.loop(ctx, "bundles", d.subscribeBundles)
	}()
	for {
		d.mu.Lock()
		for id, cancel := range d.wanted {
			if cancel != nil {
				continue
			}
			sctx, cancel := context.WithCancel(ctx)
			d.wanted[id] = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.loop(sctx, id.String(), func(ctx context.Context) error { return d.subscribeSVID(ctx, id) })
			}()
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-d.poke:
		}
	}
}

// loop runs a subscription again after it breaks, until ctx ends.
func (d *Delegated) loop(ctx context.Context, what string, sub func(context.Context) error) {
	for ctx.Err() == nil {
		if err := sub(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("SPIRE delegated identity subscription broke", "subscription", what, "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

func (d *Delegated) subscribeSVID(ctx context.Context, id spiffeid.ID) error {
	sel, err := Selectors(id)
	if err != nil {
		return err
	}
	stream, err := d.client.SubscribeToX509SVIDs(ctx, &delegatedv1.SubscribeToX509SVIDsRequest{Selectors: sel})
	if err != nil {
		return fmt.Errorf("subscribe to X.509-SVIDs of %s: %w", id, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("X.509-SVIDs of %s: %w", id, err)
		}
		s, err := pick(id, resp.GetX509Svids())
		if err != nil {
			return err
		}
		d.mu.Lock()
		if _, still := d.wanted[id]; still && ctx.Err() == nil {
			if s == nil {
				delete(d.svids, id)
			} else {
				d.svids[id] = s
			}
			d.bumpLocked()
		}
		d.mu.Unlock()
	}
}

// pick returns the SVID for exactly id among those SPIRE sent (nil when
// none): an entry with other IDs whose selectors also match is ignored.
func pick(id spiffeid.ID, in []*delegatedv1.X509SVIDWithKey) (*x509svid.SVID, error) {
	for _, s := range in {
		sid := s.GetX509Svid().GetId()
		if sid == nil || sid.GetTrustDomain() != id.TrustDomain().Name() || sid.GetPath() != id.Path() {
			continue
		}
		var chain []byte
		for _, c := range s.GetX509Svid().GetCertChain() {
			chain = append(chain, c...)
		}
		out, err := x509svid.ParseRaw(chain, s.GetX509SvidKey())
		if err != nil {
			return nil, fmt.Errorf("X.509-SVID of %s from SPIRE: %w", id, err)
		}
		if out.ID != id {
			return nil, fmt.Errorf("X.509-SVID from SPIRE names %s, want %s", out.ID, id)
		}
		return out, nil
	}
	return nil, nil
}

func (d *Delegated) subscribeBundles(ctx context.Context) error {
	stream, err := d.client.SubscribeToX509Bundles(ctx, &delegatedv1.SubscribeToX509BundlesRequest{})
	if err != nil {
		return fmt.Errorf("subscribe to X.509 bundles: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("X.509 bundles: %w", err)
		}
		// Keyed by the trust domain's ID (spiffe://<td>).
		raw, ok := resp.GetCaCertificates()[d.td.IDString()]
		if !ok {
			raw, ok = resp.GetCaCertificates()[d.td.Name()]
		}
		if !ok {
			continue
		}
		certs, err := x509.ParseCertificates(raw)
		if err != nil {
			return fmt.Errorf("X.509 bundle of %s from SPIRE: %w", d.td, err)
		}
		d.mu.Lock()
		d.bundle = x509bundle.FromX509Authorities(d.td, certs)
		d.bumpLocked()
		d.mu.Unlock()
	}
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (d *Delegated) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if td != d.td || d.bundle == nil {
		return nil, fmt.Errorf("no X.509 bundle for trust domain %s", td)
	}
	return d.bundle, nil
}

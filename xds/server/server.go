// Package server serves one node's Envoy over ADS (go-control-plane's
// snapshot cache and server) and tracks what that Envoy made of each
// configuration: ACKed, or rejected (NACK) with Envoy's error text.
//
// Snapshots are immutable and versioned by content: publishing the same
// resources again is a no-op. A configuration Envoy rejects is taken back:
// the cache returns to the last snapshot Envoy accepted, so an Envoy that
// restarts gets the configuration that was in force, not the rejected one,
// until a new configuration is published.
//
//	s := server.New(log, nodeName)
//	g := grpc.NewServer()
//	s.Register(g)
//	go g.Serve(lis)
//	version, err := s.Publish(ctx, resources)
//	st := s.Status()
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/membrane-mesh/membrane/xds/translate"
)

// Types are the xDS types a snapshot holds, in the order Envoy applies them.
var Types = []string{resource.ClusterType, resource.ListenerType}

// Status is what the node's Envoy made of the published configurations.
type Status struct {
	// Connected: an Envoy of this node has an open ADS stream.
	Connected bool `json:"connected"`
	// Streams counts the ADS streams opened so far (an Envoy restart opens
	// a new one).
	Streams int `json:"streams"`
	// Published is the version of the newest configuration published.
	Published string `json:"published,omitempty"`
	// Acked is the version Envoy last accepted for every type (the
	// configuration in force).
	Acked string `json:"acked,omitempty"`
	// AckedAt is when it did.
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// Rejected is set while the newest configuration is one Envoy rejected.
	Rejected *Rejection `json:"rejected,omitempty"`
}

// Rejection is a NACK: the version Envoy refused and why.
type Rejection struct {
	Version string    `json:"version"`
	TypeURL string    `json:"typeURL"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// InSync reports whether Envoy runs the newest configuration.
func (s Status) InSync() bool { return s.Published != "" && s.Acked == s.Published }

// Server is the ADS server of one node's Envoy.
type Server struct {
	log    *slog.Logger
	nodeID string
	cache  cachev3.SnapshotCache
	ads    serverv3.Server

	mu     sync.Mutex
	status Status
	open   map[int64]bool    // ADS streams of this node
	nonces map[string]string // response nonce → version
	acked  map[string]string // type URL → version
	// running is, by type URL, the version a connecting Envoy said it runs
	// (its first request on a stream), until it answers a response.
	running map[string]string
	snaps   map[string]*cachev3.Snapshot // published versions still of interest
	good    *cachev3.Snapshot            // last snapshot accepted for every type
	changed chan struct{}
	// wake is closed (and replaced) whenever Status changes: it wakes every
	// WaitAcked without taking Changed's signal from its consumer.
	wake chan struct{}
}

// New returns a server for the Envoy whose node ID is nodeID (the node's
// name: Envoy's --service-node). Streams of other node IDs get nothing.
func New(log *slog.Logger, nodeID string) *Server {
	s := &Server{
		log:     log,
		nodeID:  nodeID,
		cache:   cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger{log}),
		open:    map[int64]bool{},
		nonces:  map[string]string{},
		acked:   map[string]string{},
		running: map[string]string{},
		snaps:   map[string]*cachev3.Snapshot{},
		changed: make(chan struct{}, 1),
		wake:    make(chan struct{}),
	}
	s.ads = serverv3.NewServer(context.Background(), s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:     s.onOpen,
		StreamClosedFunc:   s.onClosed,
		StreamRequestFunc:  s.onRequest,
		StreamResponseFunc: s.onResponse,
	})
	return s
}

// Register adds the ADS service to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// Changed is signalled (coalesced) whenever Status changes.
func (s *Server) Changed() <-chan struct{} { return s.changed }

// Status returns the current status.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	if st.Rejected != nil {
		r := *st.Rejected
		st.Rejected = &r
	}
	return st
}

// Publish makes res the node's configuration and returns its version.
// Publishing resources equal to the newest ones changes nothing.
func (s *Server) Publish(ctx context.Context, res translate.Resources) (string, error) {
	byType := map[resource.Type][]types.Resource{resource.ClusterType: nil, resource.ListenerType: nil}
	for _, c := range res.Clusters {
		byType[resource.ClusterType] = append(byType[resource.ClusterType], c)
	}
	for _, l := range res.Listeners {
		byType[resource.ListenerType] = append(byType[resource.ListenerType], l)
	}
	// Secrets are served on request only (SDS): Envoy asks for those its
	// listeners and clusters name, so they are not part of what must be
	// acknowledged (Types), only of the version.
	for _, sec := range res.Secrets {
		byType[resource.SecretType] = append(byType[resource.SecretType], sec)
	}
	version, err := contentVersion(byType)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == s.status.Published {
		return version, nil
	}
	snap, err := cachev3.NewSnapshot(version, byType)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", version, err)
	}
	if err := snap.Consistent(); err != nil {
		return "", fmt.Errorf("snapshot %s is not consistent: %w", version, err)
	}
	if err := s.cache.SetSnapshot(ctx, s.nodeID, snap); err != nil {
		return "", fmt.Errorf("set snapshot %s: %w", version, err)
	}
	s.snaps[version] = snap
	s.status.Published = version
	s.status.Rejected = nil
	s.adoptRunning()
	s.prune()
	s.notify()
	s.log.Info("xds configuration published", "version", version,
		"listeners", len(res.Listeners), "clusters", len(res.Clusters), "secrets", len(res.Secrets))
	return version, nil
}

// contentVersion hashes the resources: equal resources, equal version.
func contentVersion(byType map[resource.Type][]types.Resource) (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, t := range append(slices.Clone(Types), resource.SecretType) {
		fmt.Fprintf(h, "%s\n", t)
		for _, r := range byType[t] {
			b, err := opts.Marshal(r)
			if err != nil {
				return "", fmt.Errorf("marshal %s: %w", cachev3.GetResourceName(r), err)
			}
			fmt.Fprintf(h, "%d\n", len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (s *Server) onOpen(_ context.Context, id int64, typeURL string) error {
	if typeURL != resource.AnyType {
		return fmt.Errorf("stream %d: only ADS is served, not %s", id, typeURL)
	}
	return nil
}

func (s *Server) onClosed(id int64, _ *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open[id] {
		return
	}
	delete(s.open, id)
	s.status.Connected = len(s.open) > 0
	if !s.status.Connected {
		// Nothing is known to be in force until an Envoy acknowledges
		// again (a restarted Envoy starts empty).
		clear(s.acked)
		clear(s.running)
		s.status.Acked, s.status.AckedAt = "", time.Time{}
	}
	s.notify()
	s.log.Info("envoy disconnected", "stream", id)
}

func (s *Server) onRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := req.GetNode(); n != nil && n.GetId() != s.nodeID {
		return fmt.Errorf("stream %d: node %q is not this node (%q)", id, n.GetId(), s.nodeID)
	}
	if !s.open[id] {
		s.open[id] = true
		s.status.Connected = true
		s.status.Streams++
		s.notify()
		s.log.Info("envoy connected", "stream", id)
	}
	if req.GetResponseNonce() == "" {
		// A first request. An Envoy that ran on while its server restarted
		// names the version it runs; when that is the one published (now
		// or later), the cache has nothing new to send it and no response
		// comes to acknowledge: it is in force as it is.
		if v := req.GetVersionInfo(); v != "" {
			s.running[req.GetTypeUrl()] = v
			s.adoptRunning()
		}
		return nil
	}
	version, ok := s.nonces[req.GetResponseNonce()]
	if !ok {
		return nil // a response of an earlier stream
	}
	delete(s.nonces, req.GetResponseNonce())
	delete(s.running, req.GetTypeUrl()) // Envoy runs what it answers now
	if d := req.GetErrorDetail(); d != nil {
		s.reject(version, req.GetTypeUrl(), d.GetMessage())
		return nil
	}
	s.acked[req.GetTypeUrl()] = version
	s.checkAcked(version)
	return nil
}

func (s *Server) onResponse(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nonces[resp.GetNonce()] = resp.GetVersionInfo()
}

// adoptRunning takes the versions a connecting Envoy runs as accepted
// where they are the one published.
func (s *Server) adoptRunning() {
	published := s.status.Published
	if published == "" {
		return
	}
	for t, v := range s.running {
		if v == published {
			s.acked[t] = v
		}
	}
	s.checkAcked(published)
}

// checkAcked records version as the one in force once every type has it.
func (s *Server) checkAcked(version string) {
	for _, t := range Types {
		if s.acked[t] != version {
			return
		}
	}
	if s.status.Acked == version {
		return
	}
	s.status.Acked, s.status.AckedAt = version, time.Now()
	if snap, ok := s.snaps[version]; ok {
		s.good = snap
	}
	s.prune()
	s.notify()
	s.log.Info("xds configuration accepted", "version", version)
}

// reject records a NACK and takes the configuration back: the cache
// returns to the last accepted snapshot (what Envoy still runs), so a
// restarted Envoy gets that one.
func (s *Server) reject(version, typeURL, msg string) {
	if version != s.status.Published {
		return // an older version: superseded already
	}
	s.status.Rejected = &Rejection{Version: version, TypeURL: typeURL, Error: msg, At: time.Now()}
	s.notify()
	s.log.Warn("envoy rejected the xds configuration", "version", version, "type", typeURL, "error", msg)
	if s.good == nil {
		return
	}
	if err := s.cache.SetSnapshot(context.Background(), s.nodeID, s.good); err != nil {
		s.log.Error("restore the accepted xds configuration", "version", s.good.GetVersion(resource.ListenerType), "error", err)
	}
}

// prune forgets snapshots that are neither the newest nor in force.
func (s *Server) prune() {
	for v := range s.snaps {
		if v != s.status.Published && v != s.status.Acked {
			delete(s.snaps, v)
		}
	}
}

// notify signals a change of Status; s.mu is held.
func (s *Server) notify() {
	close(s.wake)
	s.wake = make(chan struct{})
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// WaitAcked waits until Envoy accepted version (nil), rejected it, or ctx
// is done. It is woken by every change of Status (no polling) and leaves
// Changed's signal to its consumer.
func (s *Server) WaitAcked(ctx context.Context, version string) error {
	for {
		s.mu.Lock()
		st, wake := s.status, s.wake
		s.mu.Unlock()
		switch {
		case st.Acked == version:
			return nil
		case st.Rejected != nil && st.Rejected.Version == version:
			// Rejections are replaced, never changed: reading it unlocked is safe.
			return fmt.Errorf("envoy rejected version %s: %s", version, st.Rejected.Error)
		case st.Published != version:
			return errors.New("superseded by version " + st.Published)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for envoy to accept version %s: %w", version, ctx.Err())
		case <-wake:
		}
	}
}

// cacheLogger adapts slog to go-control-plane's logger.
type cacheLogger struct{ log *slog.Logger }

func (l cacheLogger) Debugf(format string, args ...any) {
	l.log.Debug("xds cache", "message", fmt.Sprintf(format, args...))
}
func (l cacheLogger) Infof(format string, args ...any) {
	l.log.Debug("xds cache", "message", fmt.Sprintf(format, args...))
}
func (l cacheLogger) Warnf(format string, args ...any) {
	l.log.Warn("xds cache", "message", fmt.Sprintf(format, args...))
}
func (l cacheLogger) Errorf(format string, args ...any) {
	l.log.Error("xds cache", "message", fmt.Sprintf(format, args...))
}

// Package server serves one node's Envoy over incremental (delta) ADS
// (go-control-plane's snapshot cache and server) and tracks what that Envoy
// made of each configuration: ACKed, or rejected (NACK) with Envoy's error
// text, resource by resource.
//
// Snapshots are immutable and versioned by content: publishing the same
// resources again is a no-op. Every resource is versioned by content too,
// and the delta protocol sends Envoy only the resources whose version
// changed (and the names of those removed), so a change of one route
// configuration costs one route configuration, whatever the node's size.
//
// A configuration Envoy rejects is taken back resource by resource: the
// cache keeps the newest configuration with each rejected resource
// replaced by the version Envoy runs (the rest of the change stays in
// force), or, when Envoy runs no version of a rejected resource, returns
// to the last configuration Envoy accepted whole. So an Envoy that restarts
// gets the configuration in force, not the rejected one, until a new
// configuration is published.
//
// A listener Envoy refused for its address (another socket holds it) is
// the exception: it is sent again, unchanged, after 1 s, then twice as long
// each time up to a minute, until Envoy runs it.
//
// An address that moves from one listener to another (or two listeners
// that swap theirs) reaches Envoy in two steps: first without the
// listeners concerned, then, once Envoy runs that, with them. Envoy
// refuses a listener on an address that a listener of another name it
// runs holds, and applies removals before additions.
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
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/membrane-mesh/membrane/xds/translate"
)

// Types are the xDS types a snapshot holds, in the order Envoy applies them.
var Types = []string{resource.ClusterType, resource.ListenerType, resource.RouteType}

// published are the types a snapshot holds: Types and the SDS secrets.
var published = []string{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.SecretType}

// wildcard reports whether Envoy subscribes to every resource of type t (it
// asks for route configurations by name, as its listeners need them).
func wildcard(t string) bool { return t != resource.RouteType }

// Status is what the node's Envoy made of the published configurations.
type Status struct {
	// Connected: an Envoy of this node has an open ADS stream.
	Connected bool `json:"connected"`
	// Streams counts the ADS streams opened so far (an Envoy restart opens
	// a new one).
	Streams int `json:"streams"`
	// Published is the version of the newest configuration published.
	Published string `json:"published,omitempty"`
	// Acked is the version of the configuration Envoy runs, every resource
	// of every type (the configuration in force): the one published, or
	// after a rejection the one the rejected resources were taken back to.
	Acked string `json:"acked,omitempty"`
	// AckedAt is when it did.
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// Accepted counts the times Acked took a new value since the server
	// started (never reset): a configuration can come back to an earlier
	// version, this tells that Envoy ran something since.
	Accepted int `json:"-"`
	// Rejected is set while the newest configuration holds resources
	// Envoy rejected: Version is the newest published, Resources every
	// resource of it Envoy refused (Refused says which and why).
	Rejected *Rejection `json:"rejected,omitempty"`
	// Refused are the resources of the newest configuration Envoy
	// refused, one by one, sorted by type and name.
	Refused []Refusal `json:"refused,omitempty"`
}

// Refusal is one resource Envoy refused: its error is the part of Envoy's
// error text about it (the whole text when Envoy's names none).
type Refusal struct {
	TypeURL string    `json:"typeURL"`
	Name    string    `json:"name"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
	// version is the refused version: the resource stays refused (and
	// is not sent again) while it is published unchanged, but for retries.
	version string
	// retryAt is when a listener refused for its address (addressRefusal)
	// is sent again unchanged (zero: never); retrying, that it is being
	// sent again; tries counts the refusals of this version.
	retryAt  time.Time
	retrying bool
	tries    int
}

// Retries of a listener Envoy refused for its address: after 1 s, then
// twice as long each time, at most maxRetryWait apart.
const (
	firstRetryWait = time.Second
	maxRetryWait   = time.Minute
)

// addressRefusal reports whether Envoy's error about a listener is about
// its address: one bound by another socket of the node (not Envoy's) or
// by another listener, which can let go of it.
func addressRefusal(err string) bool {
	return strings.Contains(err, "cannot bind") || strings.Contains(err, "duplicate address")
}

// Rejection is a NACK: the version Envoy refused, which of its resources
// and why.
type Rejection struct {
	Version string `json:"version"`
	TypeURL string `json:"typeURL"`
	// Resources are the names of the rejected resources (of TypeURL):
	// those of the responses Envoy refused.
	Resources []string  `json:"resources,omitempty"`
	Error     string    `json:"error"`
	At        time.Time `json:"at"`
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
	open   map[int64]bool // ADS streams of this node
	// first holds, per stream, the types it has asked for: its first
	// request of a type says what Envoy runs of it.
	first map[int64]map[string]bool
	sent  map[sentKey]sent // responses awaiting Envoy's answer
	// envoy is what Envoy runs, by type URL: resource name → version.
	envoy map[string]map[string]string
	// accepted are the resources Envoy runs (as far as known), by type URL
	// and name: what a rejected resource is taken back to.
	accepted map[string]map[string]types.Resource
	// hashes are the versions of the resources of the newest publish, by
	// identity: a Translator hands unchanged resources over as the same
	// objects, which are not marshalled and hashed again.
	hashes map[types.Resource]string
	snaps  map[string]*cachev3.Snapshot // by version: published, current, good
	// current is the snapshot in the cache: the newest published, or the
	// one a rejection took it back to.
	current *cachev3.Snapshot
	// fresh is the version of the snapshot the newest Publish made (the
	// newest configuration without the resources Envoy refused).
	fresh string
	// refused are the resources Envoy refused, by type URL and name.
	refused map[string]map[string]Refusal
	// newest is the newest configuration published; pending is it while
	// the cache holds a stage of it without the listeners whose addresses
	// move (see install).
	newest, pending *configuration
	// retry fires at the next retry of a refused listener (retryDue);
	// closed stops it for good.
	retry   *time.Timer
	closed  bool
	good    *cachev3.Snapshot // last snapshot Envoy ran whole
	changed chan struct{}
	// wake is closed (and replaced) whenever Status changes: it wakes every
	// WaitAcked without taking Changed's signal from its consumer.
	wake chan struct{}
}

// sentKey names a response: nonces count per stream.
type sentKey struct {
	stream int64
	nonce  string
}

// sent is a response Envoy has not answered yet.
type sent struct {
	typeURL   string
	version   string            // the snapshot's
	resources map[string]string // name → version
	removed   []string
	snap      *cachev3.Snapshot // nil when no longer kept
}

// New returns a server for the Envoy whose node ID is nodeID (the node's
// name: Envoy's --service-node). Streams of other node IDs get nothing.
func New(log *slog.Logger, nodeID string) *Server {
	s := &Server{
		log:      log,
		nodeID:   nodeID,
		cache:    cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger{log}),
		open:     map[int64]bool{},
		first:    map[int64]map[string]bool{},
		sent:     map[sentKey]sent{},
		envoy:    map[string]map[string]string{},
		accepted: map[string]map[string]types.Resource{},
		snaps:    map[string]*cachev3.Snapshot{},
		refused:  map[string]map[string]Refusal{},
		changed:  make(chan struct{}, 1),
		wake:     make(chan struct{}),
	}
	s.ads = serverv3.NewServer(context.Background(), s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:          s.onOpen,
		DeltaStreamOpenFunc:     s.onDeltaOpen,
		DeltaStreamClosedFunc:   s.onClosed,
		StreamDeltaRequestFunc:  s.onRequest,
		StreamDeltaResponseFunc: s.onResponse,
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
		r.Resources = slices.Clone(r.Resources)
		st.Rejected = &r
	}
	st.Refused = slices.Clone(st.Refused)
	return st
}

// Running returns the resource of type typeURL named name as Envoy runs it
// (as far as known); nil when Envoy runs none.
func (s *Server) Running(typeURL, name string) types.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[typeURL][name]
}

// Publish makes res the node's configuration and returns its version.
// Publishing resources equal to the newest ones changes nothing. The
// resources must not be modified afterwards: they are sent as they are
// when Envoy needs them, and one published again (the same object, as a
// Translator hands over an unchanged one) is not hashed again.
func (s *Server) Publish(ctx context.Context, res translate.Resources) (string, error) {
	byType := map[resource.Type][]types.Resource{resource.ClusterType: nil, resource.ListenerType: nil, resource.RouteType: nil}
	for _, c := range res.Clusters {
		byType[resource.ClusterType] = append(byType[resource.ClusterType], c)
	}
	for _, l := range res.Listeners {
		byType[resource.ListenerType] = append(byType[resource.ListenerType], l)
	}
	for _, r := range res.Routes {
		byType[resource.RouteType] = append(byType[resource.RouteType], r)
	}
	// Secrets are served on request (SDS): Envoy asks for those its
	// listeners and clusters name, so they are not part of what must be
	// acknowledged (Types), only of the version.
	for _, sec := range res.Secrets {
		byType[resource.SecretType] = append(byType[resource.SecretType], sec)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	hashes := make(map[types.Resource]string, len(s.hashes))
	versions := map[string]map[string]string{}
	for _, t := range published {
		versions[t] = make(map[string]string, len(byType[t]))
		for _, r := range byType[t] {
			h, ok := s.hashes[r]
			if !ok {
				b, err := cachev3.MarshalResource(r)
				if err != nil {
					return "", fmt.Errorf("marshal %s: %w", cachev3.GetResourceName(r), err)
				}
				h = cachev3.HashResource(b)
			}
			hashes[r] = h
			versions[t][cachev3.GetResourceName(r)] = h
		}
	}
	version := contentVersion(versions)
	if version == s.status.Published {
		return version, nil
	}
	c := configuration{version, byType, versions}
	if err := s.install(ctx, c); err != nil {
		return "", err
	}
	s.newest = &c
	s.hashes = hashes
	s.status.Published = version
	s.setRejected()
	s.checkAcked()
	s.prune()
	s.notify()
	s.log.Info("xds configuration published", "version", version,
		"listeners", len(res.Listeners), "routes", len(res.Routes), "clusters", len(res.Clusters), "secrets", len(res.Secrets))
	return version, nil
}

// configuration is a published configuration: its version and its
// resources, by type, with their versions (by type URL and name).
type configuration struct {
	version  string
	byType   map[resource.Type][]types.Resource
	versions map[string]map[string]string
}

// install puts c in the cache as Envoy is to get it. Resources Envoy
// refused and published unchanged are not sent again: Envoy keeps the
// version it runs (none of a new one). Listeners whose addresses move
// (addressMoves) are left out until Envoy no longer runs them: Envoy
// refuses a listener whose address a listener of another name it runs
// holds, and applies removals before additions, so the stage without
// them frees the addresses and c follows once Envoy runs it (advance).
func (s *Server) install(ctx context.Context, c configuration) error {
	byType, versions, snapVersion := c.byType, c.versions, c.version
	if s.keepRefused(versions) {
		byType, versions = s.withoutRefused(byType, versions)
		snapVersion = contentVersion(versions)
	}
	s.pending = nil
	if moves := s.addressMoves(byType[resource.ListenerType]); len(moves) > 0 {
		byType, versions = without(byType, versions, resource.ListenerType, moves)
		snapVersion = contentVersion(versions)
		s.pending = &c
		s.log.Info("xds listeners whose addresses move are removed first", "version", c.version,
			"listeners", strings.Join(slices.Sorted(maps.Keys(moves)), ","))
	}
	if s.current != nil && s.current.GetVersion(resource.ListenerType) == snapVersion {
		s.fresh = snapVersion
		return nil // the cache has it
	}
	snap, err := newSnapshot(snapVersion, byType, versions)
	if err != nil {
		return err
	}
	if err := s.cache.SetSnapshot(ctx, s.nodeID, snap); err != nil {
		return fmt.Errorf("set snapshot %s: %w", snapVersion, err)
	}
	s.snaps[snapVersion] = snap
	s.current = snap
	s.fresh = snapVersion
	return nil
}

// advance installs the pending configuration (its listeners whose
// addresses moved no longer run: Envoy runs the stage without them).
func (s *Server) advance() {
	if err := s.install(context.Background(), *s.pending); err != nil {
		s.log.Error("publish the staged xds configuration", "version", s.status.Published, "error", err)
		return
	}
	s.prune()
	s.checkAcked()
}

// addressMoves are the listeners of next, and those Envoy runs, that take
// part in an address's move: a listener whose address (protocol, IP and
// port) a listener of another name Envoy runs holds, which next moves
// elsewhere or removes, and that other listener (moved in a cycle, each
// would wait for the other).
func (s *Server) addressMoves(next []types.Resource) map[string]bool {
	holders := map[string]string{} // address → name, of what Envoy runs
	for name := range s.envoy[resource.ListenerType] {
		if l, ok := s.accepted[resource.ListenerType][name].(*listenerv3.Listener); ok {
			if a := socketAddress(l); a != "" {
				holders[a] = name
			}
		}
	}
	if len(holders) == 0 {
		return nil
	}
	want := make(map[string]string, len(next)) // name → address
	for _, r := range next {
		if l, ok := r.(*listenerv3.Listener); ok {
			want[l.GetName()] = socketAddress(l)
		}
	}
	var out map[string]bool
	for name, a := range want {
		holder, held := holders[a]
		if a == "" || !held || holder == name || want[holder] == a {
			continue
		}
		if out == nil {
			out = map[string]bool{}
		}
		out[name], out[holder] = true, true
	}
	return out
}

// socketAddress is where l listens ("" when not on an IP socket).
func socketAddress(l *listenerv3.Listener) string {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return ""
	}
	return fmt.Sprintf("%s %s", sa.GetProtocol(), net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
}

// without is byType and versions without the resources of type t named
// in names, and without the route configurations then no listener names.
func without(byType map[resource.Type][]types.Resource, versions map[string]map[string]string, t string, names map[string]bool) (map[resource.Type][]types.Resource, map[string]map[string]string) {
	outTypes := maps.Clone(byType)
	outVersions := maps.Clone(versions)
	outTypes[t] = slices.DeleteFunc(slices.Clone(byType[t]), func(r types.Resource) bool { return names[cachev3.GetResourceName(r)] })
	outVersions[t] = maps.Clone(versions[t])
	for name := range names {
		delete(outVersions[t], name)
	}
	return withoutUnnamedRoutes(outTypes, outVersions)
}

// withoutUnnamedRoutes drops the route configurations no listener of
// byType names (those of listeners left out): a snapshot holds those its
// listeners name, no others.
func withoutUnnamedRoutes(byType map[resource.Type][]types.Resource, versions map[string]map[string]string) (map[resource.Type][]types.Resource, map[string]map[string]string) {
	listeners := make(map[string]types.ResourceWithTTL, len(byType[resource.ListenerType]))
	for _, l := range byType[resource.ListenerType] {
		listeners[cachev3.GetResourceName(l)] = types.ResourceWithTTL{Resource: l}
	}
	named := cachev3.GetResourceReferences(listeners)[resource.RouteType]
	routes := byType[resource.RouteType]
	if !slices.ContainsFunc(routes, func(r types.Resource) bool { return !named[cachev3.GetResourceName(r)] }) {
		return byType, versions
	}
	byType, versions = maps.Clone(byType), maps.Clone(versions)
	byType[resource.RouteType] = slices.DeleteFunc(slices.Clone(routes), func(r types.Resource) bool { return !named[cachev3.GetResourceName(r)] })
	versions[resource.RouteType] = maps.Clone(versions[resource.RouteType])
	for name := range versions[resource.RouteType] {
		if !named[name] {
			delete(versions[resource.RouteType], name)
		}
	}
	return byType, versions
}

// keepRefused forgets the refusals of resources that versions (by type URL
// and name) no longer holds in their refused version, and reports whether
// any is left.
func (s *Server) keepRefused(versions map[string]map[string]string) bool {
	left := false
	for t, byName := range s.refused {
		for name, r := range byName {
			if name == "" || versions[t][name] != r.version {
				delete(byName, name)
				continue
			}
			left = true
		}
	}
	return left
}

// withoutRefused replaces every refused resource of byType by the version
// Envoy runs of it (or, while a reconnected Envoy has not acknowledged it
// yet, the version in the cache); one Envoy runs no version of is left out
// (a listener or cluster) or kept (a route configuration, which a listener
// may need).
func (s *Server) withoutRefused(byType map[resource.Type][]types.Resource, versions map[string]map[string]string) (map[resource.Type][]types.Resource, map[string]map[string]string) {
	outTypes := make(map[resource.Type][]types.Resource, len(byType))
	outVersions := make(map[string]map[string]string, len(versions))
	for t, rs := range byType {
		outVersions[t] = maps.Clone(versions[t])
		for _, r := range rs {
			name := cachev3.GetResourceName(r)
			if f, refused := s.refused[t][name]; refused && !f.retrying {
				var cur types.Resource
				var curVersion string
				if s.current != nil {
					cur, curVersion = s.current.GetResources(t)[name], s.current.GetVersionMap(t)[name]
				}
				if acc, ok := s.accepted[t][name]; ok && s.envoy[t][name] != "" {
					r = acc
					outVersions[t][name] = s.envoy[t][name]
				} else if cur != nil && curVersion != f.version {
					// Envoy reconnected and has not acknowledged yet: the
					// version in the cache is the one it ran.
					r = cur
					outVersions[t][name] = curVersion
				} else if wildcard(t) {
					delete(outVersions[t], name)
					continue
				}
			}
			outTypes[t] = append(outTypes[t], r)
		}
	}
	return withoutUnnamedRoutes(outTypes, outVersions)
}

// setRejected sets Status.Rejected and Status.Refused from the refusals.
func (s *Server) setRejected() {
	s.status.Rejected, s.status.Refused = nil, nil
	for _, t := range slices.Sorted(maps.Keys(s.refused)) {
		for _, name := range slices.Sorted(maps.Keys(s.refused[t])) {
			s.status.Refused = append(s.status.Refused, s.refused[t][name])
		}
	}
	if len(s.status.Refused) == 0 {
		return
	}
	r := &Rejection{Version: s.status.Published, TypeURL: s.status.Refused[0].TypeURL}
	var errs []string
	for _, f := range s.status.Refused {
		r.Resources = append(r.Resources, f.Name)
		if !slices.Contains(errs, f.Error) {
			errs = append(errs, f.Error)
		}
		if r.At.IsZero() || f.At.Before(r.At) {
			r.At = f.At
		}
	}
	r.Error = strings.Join(errs, "; ")
	s.status.Rejected = r
}

// newSnapshot is a consistent snapshot of byType, whose resources have the
// versions given (by type URL and name).
func newSnapshot(version string, byType map[resource.Type][]types.Resource, versions map[string]map[string]string) (*cachev3.Snapshot, error) {
	snap, err := cachev3.NewSnapshot(version, byType)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", version, err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot %s is not consistent: %w", version, err)
	}
	snap.VersionMap = versions
	return snap, nil
}

// contentVersion hashes the resources' names and versions: equal
// resources, equal version.
func contentVersion(versions map[string]map[string]string) string {
	h := sha256.New()
	for _, t := range published {
		fmt.Fprintf(h, "%s\n", t)
		for _, name := range slices.Sorted(maps.Keys(versions[t])) {
			fmt.Fprintf(h, "%q %s\n", name, versions[t][name])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (s *Server) onOpen(_ context.Context, id int64, typeURL string) error {
	s.log.Warn("envoy opened a state-of-the-world ADS stream: only incremental ADS is served; set ads_config.api_type DELTA_GRPC in its bootstrap", "stream", id)
	return fmt.Errorf("stream %d: only incremental ADS is served (ads_config.api_type DELTA_GRPC), not state-of-the-world %s", id, typeURL)
}

func (s *Server) onDeltaOpen(_ context.Context, id int64, typeURL string) error {
	if typeURL != resource.AnyType {
		return fmt.Errorf("stream %d: only ADS is served, not %s", id, typeURL)
	}
	return nil
}

func (s *Server) onClosed(id int64, _ *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.first, id)
	for k := range s.sent {
		if k.stream == id {
			delete(s.sent, k)
		}
	}
	if !s.open[id] {
		return
	}
	delete(s.open, id)
	s.status.Connected = len(s.open) > 0
	if !s.status.Connected {
		// Nothing is known to be in force until an Envoy acknowledges
		// again (a restarted Envoy starts empty).
		clear(s.envoy)
		clear(s.accepted)
		s.status.Acked, s.status.AckedAt = "", time.Time{}
		if s.pending != nil {
			s.advance() // an Envoy that connects starts with no listener
		}
	}
	s.notify()
	s.log.Info("envoy disconnected", "stream", id)
}

func (s *Server) onRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := req.GetNode(); n != nil && n.GetId() != s.nodeID {
		return fmt.Errorf("stream %d: node %q is not this node (%q)", id, n.GetId(), s.nodeID)
	}
	if !s.open[id] {
		s.open[id] = true
		s.first[id] = map[string]bool{}
		s.status.Connected = true
		s.status.Streams++
		s.notify()
		s.log.Info("envoy connected", "stream", id)
	}
	t := req.GetTypeUrl()
	if !s.first[id][t] {
		// The stream's first request of the type names what Envoy runs
		// of it: nothing when it just started, its configuration when
		// it ran on while its server restarted. When that is what is
		// published (now or later), the cache has nothing to send and
		// no response comes to acknowledge: it is in force as it is.
		s.first[id][t] = true
		s.envoy[t] = maps.Clone(req.GetInitialResourceVersions())
		if s.envoy[t] == nil {
			s.envoy[t] = map[string]string{}
		}
		s.accepted[t] = map[string]types.Resource{}
		if s.current != nil {
			cur := s.current.GetResources(t)
			for name, v := range s.envoy[t] {
				if r, ok := cur[name]; ok && s.current.GetVersionMap(t)[name] == v {
					s.accepted[t][name] = r
				}
			}
		}
		s.checkAcked()
	}
	for _, name := range req.GetResourceNamesUnsubscribe() {
		// A route configuration no listener uses any more: Envoy drops it.
		delete(s.envoy[t], name)
		delete(s.accepted[t], name)
	}
	if req.GetResponseNonce() == "" {
		return nil
	}
	key := sentKey{id, req.GetResponseNonce()}
	resp, ok := s.sent[key]
	if !ok {
		return nil // a subscription change, or a response already answered
	}
	delete(s.sent, key)
	if d := req.GetErrorDetail(); d != nil {
		s.reject(resp, d.GetMessage())
		return nil
	}
	if s.envoy[t] == nil {
		s.envoy[t], s.accepted[t] = map[string]string{}, map[string]types.Resource{}
	}
	var objs map[string]types.Resource
	if resp.snap != nil {
		objs = resp.snap.GetResources(t)
	}
	for name, v := range resp.resources {
		s.envoy[t][name] = v
		if r, ok := objs[name]; ok {
			s.accepted[t][name] = r
		} else {
			delete(s.accepted[t], name)
		}
	}
	for _, name := range resp.removed {
		delete(s.envoy[t], name)
		delete(s.accepted[t], name)
	}
	s.forgetApplied(t, resp.resources)
	s.checkAcked()
	return nil
}

// forgetApplied drops the refusals of the resources (of type t, name →
// version) Envoy applied in the refused version: a retried listener.
func (s *Server) forgetApplied(t string, applied map[string]string) {
	n := len(s.refused[t])
	maps.DeleteFunc(s.refused[t], func(name string, f Refusal) bool { return f.version != "" && applied[name] == f.version })
	if len(s.refused[t]) == n {
		return
	}
	s.setRejected()
	s.armRetry()
	s.notify()
}

// armRetry sets the retry timer to the earliest retry of a refused
// listener (none: stops it).
func (s *Server) armRetry() {
	var next time.Time
	for _, byName := range s.refused {
		for _, f := range byName {
			if !f.retryAt.IsZero() && (next.IsZero() || f.retryAt.Before(next)) {
				next = f.retryAt
			}
		}
	}
	switch {
	case s.closed:
	case next.IsZero():
		if s.retry != nil {
			s.retry.Stop()
		}
	case s.retry == nil:
		s.retry = time.AfterFunc(time.Until(next), s.retryDue)
	default:
		s.retry.Reset(time.Until(next))
	}
}

// retryDue sends the refused listeners whose retry is due again,
// unchanged, with the newest configuration.
func (s *Server) retryDue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.newest == nil {
		return
	}
	now := time.Now()
	var due []string
	for _, byName := range s.refused {
		for name, f := range byName {
			if !f.retryAt.IsZero() && !f.retryAt.After(now) {
				f.retryAt, f.retrying = time.Time{}, true
				byName[name] = f
				due = append(due, name)
			}
		}
	}
	if len(due) > 0 {
		slices.Sort(due)
		s.log.Info("xds listeners refused for their address are sent again", "listeners", strings.Join(due, ","))
		if err := s.install(context.Background(), *s.newest); err != nil {
			s.log.Error("publish the xds configuration again", "version", s.status.Published, "error", err)
		} else {
			s.prune()
			s.checkAcked()
		}
	}
	s.armRetry()
}

// Close stops the retries of refused listeners.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.retry != nil {
		s.retry.Stop()
	}
}

func (s *Server) onResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := sent{
		typeURL:   resp.GetTypeUrl(),
		version:   resp.GetSystemVersionInfo(),
		resources: make(map[string]string, len(resp.GetResources())),
		removed:   resp.GetRemovedResources(),
		snap:      s.snaps[resp.GetSystemVersionInfo()],
	}
	for _, res := range resp.GetResources() {
		r.resources[res.GetName()] = res.GetVersion()
	}
	s.sent[sentKey{id, resp.GetNonce()}] = r
}

// checkAcked records the snapshot in the cache as the one in force once
// Envoy runs every resource of it: of each wildcard type exactly those,
// and every route configuration (Envoy drops those no listener uses on its
// own).
func (s *Server) checkAcked() {
	cur := s.current
	if cur == nil {
		return
	}
	for _, t := range Types {
		want, have := cur.GetVersionMap(t), s.envoy[t]
		if wildcard(t) && len(want) != len(have) {
			return
		}
		for name, v := range want {
			if have[name] != v {
				return
			}
		}
	}
	version := cur.GetVersion(resource.ListenerType)
	if s.status.Acked == version && s.good == cur {
		return
	}
	s.good = cur
	// Envoy runs cur: its resources are what a rejection takes back to
	// (also those Envoy reported on connecting, which were not sent).
	for _, t := range Types {
		if s.accepted[t] == nil {
			s.accepted[t] = map[string]types.Resource{}
		}
		maps.Copy(s.accepted[t], cur.GetResources(t))
	}
	if s.status.Acked != version {
		s.status.Acked, s.status.AckedAt = version, time.Now()
		s.status.Accepted++
		s.prune()
		s.notify()
		s.log.Info("xds configuration accepted", "version", version)
	}
	if s.pending != nil {
		s.advance()
	}
}

// reject records a NACK of resp and takes its resources back (see the
// package's documentation). Envoy applies the listeners and clusters of a
// response it does not name in its error (it names those it refused):
// only the named ones are refused; the others count as applied.
func (s *Server) reject(resp sent, msg string) {
	if resp.version != s.fresh {
		return // an older version: superseded already
	}
	t := resp.typeURL
	names := slices.Sorted(maps.Keys(resp.resources))
	errs, named := refusalErrors(msg, names)
	if named {
		if s.envoy[t] == nil {
			s.envoy[t], s.accepted[t] = map[string]string{}, map[string]types.Resource{}
		}
		var objs map[string]types.Resource
		if resp.snap != nil {
			objs = resp.snap.GetResources(t)
		}
		for _, name := range names {
			if _, bad := errs[name]; bad {
				continue
			}
			s.envoy[t][name] = resp.resources[name]
			if r, ok := objs[name]; ok {
				s.accepted[t][name] = r
			} else {
				delete(s.accepted[t], name)
			}
		}
		for _, name := range resp.removed {
			delete(s.envoy[t], name)
			delete(s.accepted[t], name)
		}
		applied := maps.Clone(resp.resources)
		maps.DeleteFunc(applied, func(name, _ string) bool { _, bad := errs[name]; return bad })
		s.forgetApplied(t, applied)
	}
	if s.refused[t] == nil {
		s.refused[t] = map[string]Refusal{}
	}
	now := time.Now()
	for name, e := range errs {
		f := Refusal{TypeURL: t, Name: name, Error: e, At: now, version: resp.resources[name]}
		if prev, ok := s.refused[t][name]; ok && prev.version == f.version {
			f.tries = prev.tries
			if prev.Error == f.Error {
				f.At = prev.At // the same refusal, again
			}
		}
		f.tries++
		if t == resource.ListenerType && addressRefusal(e) {
			f.retryAt = now.Add(min(firstRetryWait<<min(f.tries-1, 16), maxRetryWait))
		}
		s.refused[t][name] = f
	}
	s.armRetry()
	if len(names) == 0 {
		// A removal refused: nothing to keep refusing on the next publish.
		s.refused[t][""] = Refusal{TypeURL: t, Error: strings.TrimSpace(msg), At: now}
	}
	s.setRejected()
	s.notify()
	rejected := slices.Sorted(maps.Keys(errs))
	s.log.Warn("envoy rejected the xds configuration", "version", resp.version, "type", t,
		"resources", strings.Join(rejected, ","), "error", msg)
	back, err := s.takeBack(t, rejected)
	if err != nil {
		s.log.Error("take the rejected xds resources back", "version", resp.version, "error", err)
		return
	}
	if back == nil || back.GetVersion(resource.ListenerType) == s.current.GetVersion(resource.ListenerType) {
		s.checkAcked()
		return
	}
	if err := s.cache.SetSnapshot(context.Background(), s.nodeID, back); err != nil {
		s.log.Error("restore the accepted xds configuration", "version", back.GetVersion(resource.ListenerType), "error", err)
		return
	}
	version := back.GetVersion(resource.ListenerType)
	s.snaps[version] = back
	s.current = back
	s.checkAcked()
	s.log.Info("xds configuration taken back", "version", version, "rejected", resp.version)
}

// refusalErrors splits Envoy's error text msg about a response of the
// resources names by resource: Envoy's listener and cluster errors name
// each resource it refused ("Error adding/updating listener(s) <name>:
// <error>", one line each); named is false when msg names none of them,
// and then every one of them has the whole text.
func refusalErrors(msg string, names []string) (errs map[string]string, named bool) {
	errs = map[string]string{}
	for _, n := range names {
		for _, lead := range []string{"(s) ", "\n", ", "} {
			i := strings.Index(msg, lead+n+": ")
			if i < 0 {
				continue
			}
			rest := msg[i+len(lead)+len(n)+2:]
			if j := strings.IndexByte(rest, '\n'); j >= 0 {
				rest = rest[:j]
			}
			errs[n] = strings.TrimSpace(rest)
			break
		}
	}
	if len(errs) > 0 {
		return errs, true
	}
	for _, n := range names {
		errs[n] = strings.TrimSpace(msg)
	}
	return errs, false
}

// takeBack is the snapshot in the cache with the rejected resources (of
// type t) replaced by the versions Envoy runs; a listener or cluster Envoy
// runs no version of is left out; the last snapshot Envoy ran whole when
// Envoy runs no version of a rejected route configuration, or when a
// removal was refused (no rejected resources); nil when there is none.
func (s *Server) takeBack(t string, rejected []string) (*cachev3.Snapshot, error) {
	if len(rejected) == 0 {
		return s.good, nil // a removal refused
	}
	if !wildcard(t) {
		for _, name := range rejected {
			if _, ok := s.accepted[t][name]; !ok {
				return s.good, nil
			}
		}
	}
	byType := map[resource.Type][]types.Resource{}
	versions := map[string]map[string]string{}
	for _, typ := range Types {
		versions[typ] = maps.Clone(s.current.GetVersionMap(typ))
		if versions[typ] == nil {
			versions[typ] = map[string]string{}
		}
		for name, r := range s.current.GetResources(typ) {
			if typ == t && slices.Contains(rejected, name) {
				acc, ok := s.accepted[t][name]
				if !ok {
					delete(versions[typ], name)
					continue
				}
				r = acc
				versions[typ][name] = s.envoy[t][name]
			}
			byType[typ] = append(byType[typ], r)
		}
		// Deterministic order (the snapshot keeps a map anyway).
		slices.SortFunc(byType[typ], func(a, b types.Resource) int {
			return strings.Compare(cachev3.GetResourceName(a), cachev3.GetResourceName(b))
		})
	}
	byType, versions = withoutUnnamedRoutes(byType, versions)
	return newSnapshot(contentVersion(versions), byType, versions)
}

// prune forgets snapshots that are neither the newest, nor in the cache,
// nor in force.
func (s *Server) prune() {
	for v, snap := range s.snaps {
		if v != s.status.Published && v != s.status.Acked && snap != s.current && snap != s.good {
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
	return s.wait(ctx, "accept version "+version, func(st Status) (bool, error) {
		switch {
		case st.Acked == version:
			return true, nil
		case st.Rejected != nil && st.Rejected.Version == version:
			// Rejections are replaced, never changed: reading it unlocked is safe.
			return true, fmt.Errorf("envoy rejected version %s: %s", version, st.Rejected.Error)
		case st.Published != version:
			return true, errors.New("superseded by version " + st.Published)
		}
		return false, nil
	})
}

// ErrNotConnected: no Envoy of the node has an open ADS stream.
var ErrNotConnected = errors.New("no envoy connected")

// WaitInSync waits until Envoy runs the newest published configuration
// (nil), rejected it, no Envoy is connected (ErrNotConnected: one that
// connects gets the newest), or ctx is done. Like WaitAcked, it is woken
// by every change of Status.
func (s *Server) WaitInSync(ctx context.Context) error {
	return s.wait(ctx, "run the newest configuration", func(st Status) (bool, error) {
		switch {
		case st.InSync():
			return true, nil
		case !st.Connected:
			return true, ErrNotConnected
		case st.Rejected != nil && st.Rejected.Version == st.Published:
			return true, fmt.Errorf("envoy rejected version %s: %s", st.Published, st.Rejected.Error)
		}
		return false, nil
	})
}

// wait returns done's error once done reports the Status done, or ctx's.
func (s *Server) wait(ctx context.Context, what string, done func(Status) (bool, error)) error {
	for {
		s.mu.Lock()
		st, wake := s.status, s.wake
		s.mu.Unlock()
		if ok, err := done(st); ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for envoy to %s: %w", what, ctx.Err())
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

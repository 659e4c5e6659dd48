// Package datapath is the last stage of the agent's policy pipeline: it
// writes the desired ipcache and per-endpoint policy into the policy
// datapath's BPF maps as a diff against what they hold, and attaches the
// programs to the endpoints' interfaces. The maps are behind Maps
// (bpf/policy's Datapath in the agent, a fake in tests).
package datapath

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// Maps is the policy datapath: its maps and its programs' attachments.
type Maps interface {
	UpsertIPCache(prefix netip.Prefix, id bpfpolicy.Identity) error
	DeleteIPCache(prefix netip.Prefix) error
	UpsertEndpoint(ifindex int, ep bpfpolicy.Endpoint) error
	DeleteEndpoint(ifindex int) error
	UpsertLocalRoute(addr netip.Addr, r bpfpolicy.LocalRoute) error
	DeleteLocalRoute(addr netip.Addr) error
	SetEndpointPolicy(id bpfpolicy.EndpointID, rules []bpfpolicy.Rule) error
	// Revise makes what the maps hold the policy that flows already open
	// meet (bpfpolicy Maps.Revise).
	Revise() error
	Attach(ifindex int) error
	Detach(ifindex int) error
	// Attached lists the interfaces the programs are attached to.
	Attached() ([]int, error)
	Dump() (bpfpolicy.Dump, error)
}

// Programmed is what one interface's endpoint has in the maps.
type Programmed struct {
	Endpoint bpfpolicy.Endpoint
	Rules    []bpfpolicy.Rule
	// attached: this writer attached the programs (restored entries are
	// attached again once, which also checks their links).
	attached bool
}

// Endpoint is the desired state of one local endpoint.
type Endpoint struct {
	Addr     netip.Addr
	Identity identity.ID
	// EnforceIngress/EnforceEgress: in that direction only what Rules
	// allow passes.
	EnforceIngress, EnforceEgress bool
	// AuthEgress: without EnforceEgress, Rules still hold egress redirects
	// to the authenticating proxy (a miss passes).
	AuthEgress bool
	Rules      []policy.DatapathRule
}

// Writer keeps Maps equal to the desired state. It is not safe for
// concurrent use: one regeneration loop owns it.
type Writer struct {
	log        *slog.Logger
	maps       Maps
	ipcache    map[netip.Prefix]bpfpolicy.Identity
	programmed map[int]Programmed // by ifindex
	// pickupUntil: endpoints that became tracked recently pick up the TCP
	// connections of their untracked time until then (bpfpolicy
	// Endpoint.Pickup).
	pickupUntil map[int]time.Time
	// redirected: endpoints that had redirects to the proxy; they stay
	// tracked (bpfpolicy Endpoint.Track) while they exist.
	redirected map[int]bool
	// links: the Ethernet addresses of each interface's link (from the CNI
	// plugin, or restored from the local routes); routes: the local routes
	// written (host routing), by pod address.
	links  map[int]bpfpolicy.LocalRoute
	routes map[netip.Addr]bpfpolicy.LocalRoute
	now    func() time.Time
	// converted are the datapath rules of the resolver's rule lists, by
	// their first element: endpoints sharing a Result share its list,
	// converted once (the list is kept, so its array is not reused). Those
	// no Program used between two Prunes are dropped.
	converted map[*policy.DatapathRule]conversion
}

type conversion struct {
	from []policy.DatapathRule
	to   []bpfpolicy.Rule
	used bool
}

// PickupWindow is how long an endpoint that policy starts to apply to picks
// up the TCP connections it opened or accepted before, untracked: each that
// sends a packet meanwhile is tracked from then on, as if it had always
// been, and goes on (its direction is unknown, so the policy is not checked
// on it). Later, a packet of an unknown connection is checked as a new flow.
const PickupWindow = 2 * time.Minute

// New adopts what the maps hold (pinned across agent restarts).
func New(log *slog.Logger, maps Maps) (*Writer, error) {
	dump, err := maps.Dump()
	if err != nil {
		return nil, fmt.Errorf("read pinned policy maps: %w", err)
	}
	w := &Writer{log: log, maps: maps, ipcache: map[netip.Prefix]bpfpolicy.Identity{}, programmed: map[int]Programmed{},
		pickupUntil: map[int]time.Time{}, redirected: map[int]bool{}, links: map[int]bpfpolicy.LocalRoute{},
		routes: map[netip.Addr]bpfpolicy.LocalRoute{}, now: time.Now, converted: map[*policy.DatapathRule]conversion{}}
	for _, r := range dump.Routes {
		w.routes[r.Addr] = r.Route
		w.links[r.Route.Ifindex] = r.Route
	}
	for _, c := range dump.IPCache {
		w.ipcache[c.Prefix] = c.Identity
	}
	for _, ep := range dump.Endpoints {
		w.programmed[ep.Ifindex] = Programmed{Endpoint: ep.Endpoint}
		if ep.Endpoint.Pickup {
			w.pickupUntil[ep.Ifindex] = w.now().Add(PickupWindow)
		}
		if ep.Endpoint.Track {
			w.redirected[ep.Ifindex] = true
		}
	}
	log.Info("policy datapath restored", "ipcache", len(dump.IPCache), "endpoints", len(dump.Endpoints), "routes", len(dump.Routes), "policyEntries", len(dump.Policy))
	return w, nil
}

// Revise makes what was written since the last call the policy that the
// connections already open meet: each is checked again at its next packet,
// and one the policy no longer allows is cut. Call it once a whole change is
// written (ipcache and endpoints), so that no connection meets half of one.
func (w *Writer) Revise() error {
	if err := w.maps.Revise(); err != nil {
		return fmt.Errorf("apply the policy to open connections: %w", err)
	}
	return nil
}

// SetIPCache writes new and changed prefixes, then deletes stale ones.
func (w *Writer) SetIPCache(want ipcache.Map) []error {
	var errs []error
	for p, id := range want {
		bid := bpfpolicy.Identity(id)
		if cur, ok := w.ipcache[p]; ok && cur == bid {
			continue
		}
		if err := w.maps.UpsertIPCache(p, bid); err != nil {
			errs = append(errs, err)
			continue
		}
		w.ipcache[p] = bid
	}
	for p := range w.ipcache {
		if _, ok := want[p]; ok {
			continue
		}
		if err := w.maps.DeleteIPCache(p); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.ipcache, p)
	}
	return errs
}

// Programmed returns what the interface's endpoint has in the maps.
func (w *Writer) Programmed(ifindex int) (Programmed, bool) {
	p, ok := w.programmed[ifindex]
	return p, ok
}

// Program writes the endpoint on ifindex and returns its ID: with
// enforcement growing, its rules go in before its flags; with enforcement
// shrinking, after, so no moment enforces a direction without its rules.
// Then its programs are attached. An unchanged endpoint is not written.
func (w *Writer) Program(ifindex int, ep Endpoint) (bpfpolicy.EndpointID, error) {
	bep := bpfpolicy.Endpoint{
		ID: w.endpointID(ifindex, ep.Addr), Identity: bpfpolicy.Identity(ep.Identity), Addr: ep.Addr,
		EnforceIngress: ep.EnforceIngress, EnforceEgress: ep.EnforceEgress, AuthEgress: ep.AuthEgress && !ep.EnforceEgress,
	}
	return bep.ID, w.program(ifindex, bep, w.rules(ep.Rules))
}

// rules converts rs, once for every Program between two Prunes; rs must not
// be modified afterwards (the resolver's Results are not).
func (w *Writer) rules(rs []policy.DatapathRule) []bpfpolicy.Rule {
	if len(rs) == 0 {
		return nil
	}
	c, ok := w.converted[&rs[0]]
	if !ok || len(c.from) != len(rs) {
		c = conversion{from: rs, to: Rules(rs)}
	}
	c.used = true
	w.converted[&rs[0]] = c
	return c.to
}

func (w *Writer) program(ifindex int, ep bpfpolicy.Endpoint, rules []bpfpolicy.Rule) error {
	old, had := w.programmed[ifindex]
	ep = w.tracking(ifindex, old, had, ep, rules)
	if had && old.attached && old.Endpoint == ep && sameRules(old.Rules, rules) {
		return w.route(ifindex, ep.Addr)
	}
	if had && old.Endpoint.ID != ep.ID {
		if err := w.maps.SetEndpointPolicy(old.Endpoint.ID, nil); err != nil {
			return err
		}
	}
	// An endpoint written and attached as it is keeps its entry: only its
	// rules changed.
	attached := had && old.attached
	same := attached && old.Endpoint == ep
	if had {
		// Until this is done, the endpoint's entry is not known to be
		// either: the next call writes it and attaches again.
		old.attached = false
		w.programmed[ifindex] = old
	}
	shrinking := had && (old.Endpoint.EnforceIngress && !ep.EnforceIngress || old.Endpoint.EnforceEgress && !ep.EnforceEgress)
	if shrinking {
		if err := w.maps.UpsertEndpoint(ifindex, ep); err != nil {
			return err
		}
	}
	if err := w.maps.SetEndpointPolicy(ep.ID, rules); err != nil {
		return err
	}
	if !shrinking && !same {
		if err := w.maps.UpsertEndpoint(ifindex, ep); err != nil {
			return err
		}
	}
	if !attached {
		if err := w.maps.Attach(ifindex); err != nil {
			return err
		}
	}
	w.programmed[ifindex] = Programmed{Endpoint: ep, Rules: rules, attached: true}
	if had && old.Endpoint.Addr != ep.Addr {
		if err := w.deleteRoute(ifindex, old.Endpoint.Addr); err != nil {
			return err
		}
	}
	return w.route(ifindex, ep.Addr)
}

// SetLink records the Ethernet addresses of the link to the pod on
// ifindex (host side, pod side): with them, programming its endpoint also
// writes its local route, which host routing delivers local pods' packets
// by. An interface without them is reached through the node's stack.
func (w *Writer) SetLink(ifindex int, host, pod net.HardwareAddr) {
	w.links[ifindex] = bpfpolicy.LocalRoute{Ifindex: ifindex, HostMAC: host, PodMAC: pod}
}

// route writes the local route to addr through ifindex, when its link is known.
func (w *Writer) route(ifindex int, addr netip.Addr) error {
	link, ok := w.links[ifindex]
	if !ok || !addr.Is4() {
		return nil
	}
	if cur, ok := w.routes[addr]; ok && cur.Equal(link) {
		return nil
	}
	if err := w.maps.UpsertLocalRoute(addr, link); err != nil {
		return err
	}
	w.routes[addr] = link
	return nil
}

// deleteRoute removes the local route to addr if it goes through ifindex
// (the address may have moved on to a new pod's interface).
func (w *Writer) deleteRoute(ifindex int, addr netip.Addr) error {
	if cur, ok := w.routes[addr]; !ok || cur.Ifindex != ifindex {
		return nil
	}
	if err := w.maps.DeleteLocalRoute(addr); err != nil {
		return err
	}
	delete(w.routes, addr)
	return nil
}

// sameRules is slices.Equal, at once for the same list.
func sameRules(a, b []bpfpolicy.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0] || slices.Equal(a, b)
}

// ProgramInit writes the endpoint of a new interface with the reserved init
// identity, which drops every new flow but the node's until Program writes
// its real identity and policy, and attaches the programs. An interface
// already programmed for addr keeps what it has.
func (w *Writer) ProgramInit(ifindex int, addr netip.Addr) (bpfpolicy.EndpointID, error) {
	if p, ok := w.programmed[ifindex]; ok && p.Endpoint.Addr == addr && p.attached {
		return p.Endpoint.ID, w.route(ifindex, addr)
	}
	// Enforcing both ways: tracked, so no packet takes the minimal path
	// of endpoints without policy.
	bep := bpfpolicy.Endpoint{ID: w.endpointID(ifindex, addr), Identity: bpfpolicy.IdentityInit, Addr: addr, EnforceIngress: true, EnforceEgress: true}
	return bep.ID, w.program(ifindex, bep, nil)
}

// Init lists the interfaces whose endpoint has the init identity, with its
// address.
func (w *Writer) Init() map[int]netip.Addr {
	out := map[int]netip.Addr{}
	for ifindex, p := range w.programmed {
		if p.Endpoint.Identity == bpfpolicy.IdentityInit {
			out[ifindex] = p.Endpoint.Addr
		}
	}
	return out
}

// tracking sets ep.Track for an endpoint that enforces nothing but had
// redirects to the proxy (its redirected connections are in conntrack),
// and ep.Pickup while the endpoint is in its PickupWindow: the window opens
// when an untracked endpoint (programmed without any policy) becomes
// tracked (New gives one the maps show picking up a new window).
func (w *Writer) tracking(ifindex int, old Programmed, had bool, ep bpfpolicy.Endpoint, rules []bpfpolicy.Rule) bpfpolicy.Endpoint {
	for _, r := range rules {
		if r.Entry.Verdict == bpfpolicy.Redirect {
			w.redirected[ifindex] = true
			break
		}
	}
	if !ep.Tracked() && w.redirected[ifindex] {
		ep.Track = true
	}
	if !ep.Tracked() {
		delete(w.pickupUntil, ifindex)
		return ep
	}
	now := w.now()
	if _, ok := w.pickupUntil[ifindex]; !ok && had && !old.Endpoint.Tracked() {
		w.pickupUntil[ifindex] = now.Add(PickupWindow)
	}
	if until, ok := w.pickupUntil[ifindex]; ok {
		if now.Before(until) {
			ep.Pickup = true
		} else {
			delete(w.pickupUntil, ifindex)
		}
	}
	return ep
}

// endpointID keeps the ID an interface had for the same address (also
// across agent restarts), or takes the lowest free one.
func (w *Writer) endpointID(ifindex int, addr netip.Addr) bpfpolicy.EndpointID {
	if p, ok := w.programmed[ifindex]; ok && p.Endpoint.Addr == addr && p.Endpoint.ID != 0 {
		return p.Endpoint.ID
	}
	used := map[bpfpolicy.EndpointID]bool{}
	for _, p := range w.programmed {
		used[p.Endpoint.ID] = true
	}
	for id := bpfpolicy.EndpointID(1); id != 0; id++ {
		if !used[id] {
			return id
		}
	}
	return 0 // 65535 local endpoints: UpsertEndpoint reports it
}

// Prune forgets interfaces not in keep (the pod went away, or its veth
// did) and, with sweep, detaches the programs from interfaces it does not
// know.
func (w *Writer) Prune(keep map[int]bool, sweep bool) []error {
	for k, c := range w.converted {
		if !c.used {
			delete(w.converted, k)
			continue
		}
		c.used = false
		w.converted[k] = c
	}
	var errs []error
	for ifindex, p := range w.programmed {
		if keep[ifindex] {
			continue
		}
		if err := w.deleteRoute(ifindex, p.Endpoint.Addr); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := w.maps.DeleteEndpoint(ifindex); err != nil {
			errs = append(errs, err)
			continue
		}
		if p.Endpoint.ID != 0 {
			if err := w.maps.SetEndpointPolicy(p.Endpoint.ID, nil); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := w.maps.Detach(ifindex); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.programmed, ifindex)
		delete(w.pickupUntil, ifindex)
		delete(w.redirected, ifindex)
		delete(w.links, ifindex)
		w.log.Info("endpoint removed", "ifindex", ifindex, "endpoint", p.Endpoint.ID)
	}
	for addr, r := range w.routes {
		if !keep[r.Ifindex] {
			errs = append(errs, w.deleteRoute(r.Ifindex, addr))
		}
	}
	if !sweep {
		return errs
	}
	attached, err := w.maps.Attached()
	if err != nil {
		return append(errs, err)
	}
	for _, ifindex := range attached {
		if !keep[ifindex] {
			errs = append(errs, w.maps.Detach(ifindex))
		}
	}
	return errs
}

// Rules converts resolved rules to the policy map's.
func Rules(rs []policy.DatapathRule) []bpfpolicy.Rule {
	out := make([]bpfpolicy.Rule, 0, len(rs))
	for _, r := range rs {
		out = append(out, bpfpolicy.Rule{
			Key: bpfpolicy.PolicyKey{
				Direction: bpfDirection(r.Direction), RemoteIdentity: bpfpolicy.Identity(r.RemoteIdentity),
				Proto: bpfProto(r.Proto), Port: r.Port, EndPort: r.EndPort,
			},
			Entry: bpfpolicy.PolicyEntry{Verdict: bpfVerdict(r.Verdict), ProxyPort: r.ProxyPort, AuthRequired: r.AuthRequired},
		})
	}
	return out
}

// The policy datapath keeps its own types for the values it shares with
// its programs (the maps' numbers); the control plane uses mesh/model's.
// These are the only conversions between them, and
// TestDatapathValuesAgree checks the numbers agree.

func bpfDirection(d model.Direction) bpfpolicy.Direction { return bpfpolicy.Direction(d) }

func bpfProto(p model.Protocol) bpfpolicy.Proto { return bpfpolicy.Proto(p) }

func bpfVerdict(v model.Verdict) bpfpolicy.Verdict { return bpfpolicy.Verdict(v) }

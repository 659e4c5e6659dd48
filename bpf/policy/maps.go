package policy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
)

// Maps is the typed write API over the policy datapath's maps. Its methods
// are safe for concurrent use; writers are serialized.
//
// It keeps a copy of the policy map's entries, read once when it is opened,
// so SetEndpointPolicy writes only differences. That copy assumes one writer:
// the agent's Datapath (a Maps from OpenPinned is for reading).
type Maps struct {
	mu sync.Mutex

	ipcache   *ebpf.Map // membrane_ipc4: LPM prefix -> identity
	endpoints *ebpf.Map // membrane_eps: ifindex -> endpoint
	routes    *ebpf.Map // membrane_lroute4: pod IPv4 -> ifindex, MACs (host routing)
	policy    *ebpf.Map // membrane_policy: LPM (endpoint, dir, identity, proto, port) -> entry
	ct        *ebpf.Map // membrane_ct4: tuple -> flow (LRU)
	frags     *ebpf.Map // membrane_frag4: first fragments' ports (LRU)
	events    *ebpf.Map // membrane_events: ring buffer
	metrics   *ebpf.Map // membrane_polmet: (direction, reason) -> per-CPU packets, bytes
	counters  *ebpf.Map // membrane_polcnt: pol_counter -> per-CPU u64
	// revision is membrane_polrev (nil in a Maps from OpenPinned), rev the
	// value written to it last, dirty whether the policy, ipcache or
	// endpoint maps changed since (see Revise).
	revision *ebpf.Map
	rev      atomic.Uint32
	dirty    atomic.Bool

	// shadow holds the policy map's entries, by endpoint, as written.
	shadow map[EndpointID]map[policyPolicyKey]policyPolicyEntry
	// rules holds, by endpoint, the rules of its last SetEndpointPolicy
	// while its shadow holds exactly their entries: the next call with
	// equal rules writes nothing, and one with rules in compareRules'
	// order recomputes only the (direction, identity) groups whose rules
	// differ. An endpoint without rules here (read from the map, written
	// by UpsertPolicy or DeletePolicy, or after a failed write) is
	// recomputed in full.
	rules map[EndpointID]*ruleList
	// lists are the lists recent calls made, by their rules' hash: the
	// next endpoint given equal rules shares one. plans are the entries
	// of changes from one list to another, computed once for every
	// endpoint making the same change.
	lists map[uint64]*ruleList
	plans map[listChange]*entryPlan
	// noBatch: the kernel lacks batch operations on the policy map (before 5.6).
	noBatch bool
	// writer: these are the Datapath's maps (Load), the policy map's one
	// writer, whose shadow is what the map holds.
	writer bool
}

// policyEntries is how many entries the shadow holds.
func (m *Maps) policyEntries() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, es := range m.shadow {
		n += len(es)
	}
	return n
}

func newMaps(m *policyMaps) (*Maps, error) {
	maps := &Maps{
		ipcache:   m.MembraneIpc4,
		endpoints: m.MembraneEps,
		routes:    m.MembraneLroute4,
		policy:    m.MembranePolicy,
		ct:        m.MembraneCt4,
		frags:     m.MembraneFrag4,
		events:    m.MembraneEvents,
		metrics:   m.MembranePolmet,
		counters:  m.MembranePolcnt,
		revision:  m.MembranePolrev,
		rules:     map[EndpointID]*ruleList{},
		lists:     map[uint64]*ruleList{},
		plans:     map[listChange]*entryPlan{},
	}
	if err := maps.readShadow(); err != nil {
		return nil, err
	}
	// Conntrack entries outlive the revision map (not pinned): a start far
	// from the last run's revisions has every flow checked once more.
	maps.rev.Store(uint32(time.Now().UnixNano()))
	maps.dirty.Store(true)
	if err := maps.Revise(); err != nil {
		return nil, err
	}
	return maps, nil
}

// Revise makes what the policy, ipcache and endpoint maps hold now the
// policy that flows already open meet: if they changed since the last call,
// each tracked flow's next packet in its own direction is checked against
// them again (bpf/lib/conntrack4.h), and a flow they no longer allow is
// dropped. Call it once a whole change is written: a flow checked between
// the writes of one change could meet half of it.
func (m *Maps) Revise() error {
	if m.revision == nil || !m.dirty.Swap(false) {
		return nil
	}
	if err := m.revision.Update(uint32(0), m.rev.Add(1), ebpf.UpdateAny); err != nil {
		m.dirty.Store(true)
		return fmt.Errorf("revise the policy: %w", err)
	}
	return nil
}

func (m *Maps) all() []*ebpf.Map {
	return []*ebpf.Map{m.ipcache, m.endpoints, m.routes, m.policy, m.ct, m.frags, m.events, m.metrics, m.counters, m.revision}
}

// Close releases the map file descriptors; pinned maps stay.
func (m *Maps) Close() error {
	var errs []error
	for _, mp := range m.all() {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

func (m *Maps) readShadow() error {
	m.shadow = make(map[EndpointID]map[policyPolicyKey]policyPolicyEntry)
	var (
		k policyPolicyKey
		v policyPolicyEntry
	)
	it := m.policy.Iterate()
	for it.Next(&k, &v) {
		id := EndpointID(k.EndpointId)
		if m.shadow[id] == nil {
			m.shadow[id] = make(map[policyPolicyKey]policyPolicyEntry)
		}
		m.shadow[id][k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read policy map: %w", err)
	}
	return nil
}

// ipcacheKey validates an IPv4 prefix (an IPv4-mapped IPv6 prefix of /96 or
// longer is accepted) and returns its map key.
func ipcacheKey(p netip.Prefix) (policyIpcache4Key, error) {
	if !p.IsValid() {
		return policyIpcache4Key{}, fmt.Errorf("prefix %s: %w", p, ErrInvalid)
	}
	addr, bits := p.Addr(), p.Bits()
	if addr.Is4In6() {
		if bits < 96 {
			return policyIpcache4Key{}, fmt.Errorf("prefix %s: not IPv4: %w", p, ErrInvalid)
		}
		addr, bits = addr.Unmap(), bits-96
	}
	if !addr.Is4() {
		return policyIpcache4Key{}, fmt.Errorf("prefix %s: not IPv4 (the datapath is IPv4-only): %w", p, ErrInvalid)
	}
	masked := netip.PrefixFrom(addr, bits).Masked()
	a, _ := addrToNet(masked.Addr())
	return policyIpcache4Key{Prefixlen: uint32(bits), Addr: a}, nil
}

// UpsertIPCache maps the addresses of prefix to identity: a pod's /32 to its
// identity, node addresses to IdentityHost or IdentityRemoteNode, CIDRs to
// CIDR identities. The longest prefix wins; an address no prefix covers is
// IdentityWorld (so is 0.0.0.0/0, if the agent writes it). Host bits of
// prefix are ignored.
func (m *Maps) UpsertIPCache(prefix netip.Prefix, identity Identity) error {
	key, err := ipcacheKey(prefix)
	if err != nil {
		return fmt.Errorf("upsert ipcache: %w", err)
	}
	if identity == IdentityAny {
		return fmt.Errorf("upsert ipcache %s: identity 0: %w", prefix, ErrInvalid)
	}
	if err := m.ipcache.Update(&key, &policyIpcacheEntry{Identity: uint32(identity)}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert ipcache %s -> %s: %w", prefix, identity, err)
	}
	m.dirty.Store(true)
	return nil
}

// LookupIPCache returns the identity the datapath gives addr: that of the
// longest prefix holding it (the kernel's longest-prefix match), and
// false when no prefix holds it (the datapath then uses IdentityWorld,
// which it returns).
func (m *Maps) LookupIPCache(addr netip.Addr) (Identity, bool, error) {
	key, err := ipcacheKey(netip.PrefixFrom(addr, addr.BitLen()))
	if err != nil {
		return 0, false, fmt.Errorf("look up ipcache: %w", err)
	}
	var v policyIpcacheEntry
	err = m.ipcache.Lookup(&key, &v)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return IdentityWorld, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("look up ipcache %s: %w", addr, err)
	}
	return Identity(v.Identity), true, nil
}

// DeleteIPCache removes prefix; a missing one is fine.
func (m *Maps) DeleteIPCache(prefix netip.Prefix) error {
	key, err := ipcacheKey(prefix)
	if err != nil {
		return fmt.Errorf("delete ipcache: %w", err)
	}
	if err := deleteIfExists(m.ipcache, &key); err != nil {
		return fmt.Errorf("delete ipcache %s: %w", prefix, err)
	}
	m.dirty.Store(true)
	return nil
}

// endpoint_info.flags (EP_* in bpf/lib/endpoint.h).
const (
	epEnforceIngress = 1 << 0
	epEnforceEgress  = 1 << 1
	epAuthEgress     = 1 << 2
	epPickup         = 1 << 3
	epTrack          = 1 << 4
)

func (ep Endpoint) value() (policyEndpointInfo, error) {
	v := policyEndpointInfo{Identity: uint32(ep.Identity), EndpointId: uint16(ep.ID)}
	switch {
	case ep.ID == 0:
		return v, fmt.Errorf("endpoint ID 0: %w", ErrInvalid)
	case ep.Identity == IdentityAny:
		return v, fmt.Errorf("endpoint %d: identity 0: %w", ep.ID, ErrInvalid)
	}
	if ep.Addr.IsValid() {
		a, ok := addrToNet(ep.Addr)
		if !ok {
			return v, fmt.Errorf("endpoint %d: address %s is not IPv4: %w", ep.ID, ep.Addr, ErrInvalid)
		}
		v.Addr = a
	}
	if ep.EnforceIngress {
		v.Flags |= epEnforceIngress
	}
	if ep.EnforceEgress {
		v.Flags |= epEnforceEgress
	}
	if ep.AuthEgress {
		v.Flags |= epAuthEgress
	}
	if ep.Pickup {
		v.Flags |= epPickup
	}
	if ep.Track {
		v.Flags |= epTrack
	}
	return v, nil
}

func endpointFromValue(v policyEndpointInfo) Endpoint {
	ep := Endpoint{
		ID:             EndpointID(v.EndpointId),
		Identity:       Identity(v.Identity),
		EnforceIngress: v.Flags&epEnforceIngress != 0,
		EnforceEgress:  v.Flags&epEnforceEgress != 0,
		AuthEgress:     v.Flags&epAuthEgress != 0,
		Pickup:         v.Flags&epPickup != 0,
		Track:          v.Flags&epTrack != 0,
	}
	if v.Addr != 0 {
		ep.Addr = netToAddr(v.Addr)
	}
	return ep
}

// UpsertEndpoint creates or replaces the endpoint on the host-side interface
// ifindex. Write the endpoint's policy (SetEndpointPolicy) before enforcing
// it, or new flows are dropped meanwhile.
func (m *Maps) UpsertEndpoint(ifindex int, ep Endpoint) error {
	if ifindex <= 0 || ifindex > 1<<31-1 {
		return fmt.Errorf("upsert endpoint %d: ifindex %d: %w", ep.ID, ifindex, ErrInvalid)
	}
	v, err := ep.value()
	if err != nil {
		return fmt.Errorf("upsert endpoint: %w", err)
	}
	if err := m.endpoints.Update(uint32(ifindex), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert endpoint %d on ifindex %d: %w", ep.ID, ifindex, err)
	}
	m.dirty.Store(true)
	return nil
}

// DeleteEndpoint removes the endpoint on ifindex (a missing one is fine):
// its traffic is no longer policed. Its policy entries stay until
// SetEndpointPolicy(id, nil).
func (m *Maps) DeleteEndpoint(ifindex int) error {
	if ifindex <= 0 || ifindex > 1<<31-1 {
		return fmt.Errorf("delete endpoint: ifindex %d: %w", ifindex, ErrInvalid)
	}
	if err := deleteIfExists(m.endpoints, uint32(ifindex)); err != nil {
		return fmt.Errorf("delete endpoint on ifindex %d: %w", ifindex, err)
	}
	return nil
}

// LocalRoute is how the node reaches a local endpoint's pod: its host-side
// interface and the Ethernet addresses of that link. Host routing delivers
// packets between local pods with it, skipping the node's stack.
type LocalRoute struct {
	Ifindex int
	PodMAC  net.HardwareAddr
	HostMAC net.HardwareAddr
}

// Equal reports whether r and o are the same route.
func (r LocalRoute) Equal(o LocalRoute) bool {
	return r.Ifindex == o.Ifindex && bytes.Equal(r.PodMAC, o.PodMAC) && bytes.Equal(r.HostMAC, o.HostMAC)
}

func (r LocalRoute) value() (policyLocalRoute, error) {
	var v policyLocalRoute
	switch {
	case r.Ifindex <= 0 || r.Ifindex > 1<<31-1:
		return v, fmt.Errorf("ifindex %d: %w", r.Ifindex, ErrInvalid)
	case len(r.PodMAC) != 6 || len(r.HostMAC) != 6:
		return v, fmt.Errorf("MACs %q, %q: want Ethernet addresses: %w", r.PodMAC, r.HostMAC, ErrInvalid)
	}
	v.Ifindex = uint32(r.Ifindex)
	copy(v.PodMac[:], r.PodMAC)
	copy(v.HostMac[:], r.HostMAC)
	return v, nil
}

func routeFromValue(v policyLocalRoute) LocalRoute {
	return LocalRoute{Ifindex: int(v.Ifindex), PodMAC: net.HardwareAddr(bytes.Clone(v.PodMac[:])), HostMAC: net.HardwareAddr(bytes.Clone(v.HostMac[:]))}
}

// UpsertLocalRoute creates or replaces the local route to the pod at addr.
func (m *Maps) UpsertLocalRoute(addr netip.Addr, r LocalRoute) error {
	a, ok := addrToNet(addr)
	if !ok {
		return fmt.Errorf("upsert local route: address %s is not IPv4: %w", addr, ErrInvalid)
	}
	v, err := r.value()
	if err != nil {
		return fmt.Errorf("upsert local route %s: %w", addr, err)
	}
	if err := m.routes.Update(a, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert local route %s -> ifindex %d: %w", addr, r.Ifindex, err)
	}
	return nil
}

// DeleteLocalRoute removes the local route to addr (a missing one is fine):
// packets to it take the node's stack.
func (m *Maps) DeleteLocalRoute(addr netip.Addr) error {
	a, ok := addrToNet(addr)
	if !ok {
		return fmt.Errorf("delete local route: address %s is not IPv4: %w", addr, ErrInvalid)
	}
	if err := deleteIfExists(m.routes, a); err != nil {
		return fmt.Errorf("delete local route %s: %w", addr, err)
	}
	return nil
}

// SetEndpointPolicy makes rules the whole policy of endpoint id, in both
// directions (nil removes it). Keys of rules may leave EndpointID 0.
// Overlapping rules combine: deny wins, a redirect beats an allow,
// authentication is required if any rule requires it.
//
// Only differences are written: new and changed entries first, then stale
// ones are deleted. A flow allowed both before and after the call is allowed
// at every moment in between; flows already tracked keep going regardless.
// Invalid rules change nothing. With rules in order (by direction, remote
// identity, protocol, port, end port, then entry: the agent's resolver's
// order), the work is in proportion to what changed since the endpoint's
// last call: only the entries of the (direction, remote identity) pairs
// whose rules differ are computed again. Endpoints given equal rules share
// that work: the entries are computed once for all of them (see ruleList).
func (m *Maps) SetEndpointPolicy(id EndpointID, rules []Rule) error {
	if err := (PolicyKey{}).validate(id); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.rules[id]
	if old != nil && slices.Equal(old.rules, rules) {
		return nil
	}
	list, err := m.ruleList(rules)
	if err == nil {
		err = list.usableBy(id)
	}
	if err != nil {
		return fmt.Errorf("set policy of endpoint %d: %w", id, err)
	}
	p := m.plan(old, list)
	switch {
	case p.err != nil:
		return fmt.Errorf("set policy of endpoint %d: %w", id, p.err)
	case p.none:
		m.rules[id] = list
		return nil
	}
	// What is written now is what the rules make of it only when every
	// write succeeds.
	delete(m.rules, id)
	if p.whole {
		err = m.apply(id, p.want)
	} else {
		err = m.applySome(id, p.want, p.maybe)
	}
	if err != nil {
		return fmt.Errorf("set policy of endpoint %d: %w", id, err)
	}
	if len(list.rules) > 0 {
		m.rules[id] = list
	}
	return nil
}

// ruleList returns rules as a list: a recent call's when equal, else a new
// one (validated).
func (m *Maps) ruleList(rules []Rule) (*ruleList, error) {
	h := rulesHash(rules)
	if l, ok := m.lists[h]; ok && slices.Equal(l.rules, rules) {
		return l, nil
	}
	l, err := newRuleList(rules)
	if err != nil {
		return nil, err
	}
	if len(m.lists) >= maxLists {
		clear(m.lists)
	}
	m.lists[h] = l
	return l, nil
}

// allEntries returns the map entries of rules (validated; merged in their
// order), EndpointId 0.
func allEntries(rules []Rule) (map[policyPolicyKey]policyPolicyEntry, error) {
	own := make(ownEntries, len(rules))
	if err := own.add(rules); err != nil {
		return nil, err
	}
	return own.effective(), nil
}

// groupEntries returns the map entries of the groups of rules (sorted),
// and the keys of old's rules of the groups that are not among them: those
// that go where the endpoint holds them (EndpointId 0).
func groupEntries(old, rules []Rule, groups []ruleGroup) (map[policyPolicyKey]policyPolicyEntry, []policyPolicyKey, error) {
	own := ownEntries{}
	for _, g := range groups {
		if err := own.add(groupSpan(rules, g)); err != nil {
			return nil, nil, err
		}
	}
	var maybe []policyPolicyKey
	seen := map[policyPolicyKey]bool{}
	for _, g := range groups {
		for _, r := range groupSpan(old, g) {
			for _, k := range r.Key.mapKeys(0) {
				if _, ok := own[k]; !ok && !seen[k] {
					seen[k] = true
					maybe = append(maybe, k)
				}
			}
		}
	}
	// Every entry of a group is here, and the derived flags come from
	// the entry's own group: effective() of these is theirs in the whole.
	return own.effective(), maybe, nil
}

// add merges the entries of rules (validated; in their order), EndpointId
// 0.
func (o ownEntries) add(rules []Rule) error {
	for _, r := range rules {
		v, err := r.Entry.value()
		if err != nil {
			return fmt.Errorf("%s: %w", r.Key, err)
		}
		for _, k := range r.Key.mapKeys(0) {
			if err := o.merge(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// ruleGroup is the (direction, remote identity) pair of rules: a rule's map
// entries, and the entries whose derived flags it can change, are its
// group's.
type ruleGroup struct {
	dir      Direction
	identity Identity
}

func groupOf(r Rule) ruleGroup { return ruleGroup{r.Key.Direction, r.Key.RemoteIdentity} }

func compareGroups(a, b ruleGroup) int {
	if a.dir != b.dir {
		return cmp.Compare(a.dir, b.dir)
	}
	return cmp.Compare(a.identity, b.identity)
}

// compareRules orders rules by group first (then key, then entry); the
// endpoint ID of keys is left out (0 stands for the endpoint's).
func compareRules(a, b Rule) int {
	ah, al := ruleOrder(&a)
	bh, bl := ruleOrder(&b)
	if ah != bh {
		return cmp.Compare(ah, bh)
	}
	return cmp.Compare(al, bl)
}

// ruleOrder packs what compareRules compares into two numbers, in order.
func ruleOrder(r *Rule) (hi, lo uint64) {
	k, e := &r.Key, &r.Entry
	hi = uint64(k.Direction)<<56 | uint64(k.RemoteIdentity)<<24 | uint64(k.Proto)<<16 | uint64(k.Port)
	lo = uint64(k.EndPort)<<32 | uint64(e.Verdict)<<24 | uint64(e.ProxyPort)<<8
	if e.AuthRequired {
		lo |= 1
	}
	return hi, lo
}

// changedGroups returns, in order, the groups whose rules differ between
// old and cur (both sorted), and how many rules of old and cur they hold.
func changedGroups(old, cur []Rule) ([]ruleGroup, int) {
	var out []ruleGroup
	add := func(r Rule) {
		if g := groupOf(r); len(out) == 0 || out[len(out)-1] != g {
			out = append(out, g)
		}
	}
	for i, j := 0, 0; i < len(old) || j < len(cur); {
		c := 0
		switch {
		case j == len(cur):
			c = -1
		case i == len(old):
			c = 1
		default:
			c = compareRules(old[i], cur[j])
		}
		switch {
		case c == 0:
			i++
			j++
		case c < 0:
			add(old[i])
			i++
		default:
			add(cur[j])
			j++
		}
	}
	// They come in order: the merge of two lists sorted by group first.
	affected := 0
	for _, g := range out {
		affected += len(groupSpan(old, g)) + len(groupSpan(cur, g))
	}
	return out, affected
}

// groupSpan returns the rules of group g in rules (sorted).
func groupSpan(rules []Rule, g ruleGroup) []Rule {
	lo, _ := slices.BinarySearchFunc(rules, g, func(r Rule, g ruleGroup) int {
		if c := compareGroups(groupOf(r), g); c != 0 {
			return c
		}
		return 1 // the first of g
	})
	hi := lo
	for hi < len(rules) && groupOf(rules[hi]) == g {
		hi++
	}
	return rules[lo:hi]
}

// UpsertPolicy writes one entry: the map entries of key (one per protocol
// and port block of a range) get entry, replacing what they held, whichever
// rule put it there. Use SetEndpointPolicy for whole policies: it combines
// overlapping rules.
func (m *Maps) UpsertPolicy(key PolicyKey, entry PolicyEntry) error {
	if err := key.validate(key.EndpointID); err != nil {
		return fmt.Errorf("upsert policy: %w", err)
	}
	v, err := entry.value()
	if err != nil {
		return fmt.Errorf("upsert policy %s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rules, key.EndpointID)
	own := m.ownEntries(key.EndpointID)
	for _, k := range key.mapKeys(0) {
		own.set(k, v)
	}
	if err := m.apply(key.EndpointID, own.effective()); err != nil {
		return fmt.Errorf("upsert policy %s: %w", key, err)
	}
	return nil
}

// DeletePolicy removes the map entries of key (a missing one is fine).
func (m *Maps) DeletePolicy(key PolicyKey) error {
	if err := key.validate(key.EndpointID); err != nil {
		return fmt.Errorf("delete policy: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rules, key.EndpointID)
	own := m.ownEntries(key.EndpointID)
	for _, k := range key.mapKeys(0) {
		delete(own, k)
	}
	if err := m.apply(key.EndpointID, own.effective()); err != nil {
		return fmt.Errorf("delete policy %s: %w", key, err)
	}
	return nil
}

// LookupPolicy returns the entry the policy map holds under key itself (its
// EndpointID set), and whether it is there: an entry of a shorter prefix
// that merely covers key (an L3-only entry, a protocol's every port, a wider
// port block) does not count. A key of several map entries (AnyProto with a
// port: TCP, UDP and SCTP; a port range: its aligned blocks) is there when
// all of them are; the entry returned is the first one's (TCP, lowest port).
//
// It reads the kernel's map, not the copy SetEndpointPolicy diffs against,
// so a Maps from OpenPinned sees what the agent writes after it was opened:
// one lookup per map entry, where a Dump walks every entry.
func (m *Maps) LookupPolicy(key PolicyKey) (PolicyEntry, bool, error) {
	if err := key.validate(key.EndpointID); err != nil {
		return PolicyEntry{}, false, fmt.Errorf("look up policy: %w", err)
	}
	var first PolicyEntry
	for i, k := range key.mapKeys(key.EndpointID) {
		var v policyPolicyEntry
		err := m.policy.Lookup(&k, &v)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return PolicyEntry{}, false, nil
		case err != nil:
			return PolicyEntry{}, false, fmt.Errorf("look up policy %s: %w", keyString(k), err)
		case uint32(v.L4Prefix)+prefixFixed != k.Prefixlen:
			// The longest match is a shorter prefix: k itself is missing.
			return PolicyEntry{}, false, nil
		}
		if i == 0 {
			first = entryFromMap(v)
		}
	}
	return first, true, nil
}

// ownEntries copies endpoint id's entries without derived flags, EndpointId
// 0.
func (m *Maps) ownEntries(id EndpointID) ownEntries {
	own := make(ownEntries, len(m.shadow[id]))
	for k, v := range m.shadow[id] {
		own[anyEndpoint(k)] = ownOf(v)
	}
	return own
}

// apply makes endpoint id's entries in the map equal to want (EndpointId
// 0): writes new and changed entries, then deletes the rest (in batches
// where the kernel can). The shadow follows every successful write, so a
// failed apply is redone by the next one.
func (m *Maps) apply(id EndpointID, want map[policyPolicyKey]policyPolicyEntry) error {
	keys, vals := m.changed(id, want)
	var stale []policyPolicyKey
	for k := range m.shadow[id] {
		if _, ok := want[anyEndpoint(k)]; !ok {
			stale = append(stale, k)
		}
	}
	return m.write(id, keys, vals, stale)
}

// applySome is apply for some of endpoint id's entries: those of want, and
// those of maybe (not in want), which go (EndpointId 0 in both).
func (m *Maps) applySome(id EndpointID, want map[policyPolicyKey]policyPolicyEntry, maybe []policyPolicyKey) error {
	keys, vals := m.changed(id, want)
	var stale []policyPolicyKey
	cur := m.shadow[id]
	for _, k := range maybe {
		k = forEndpoint(k, id)
		if _, ok := cur[k]; ok {
			stale = append(stale, k)
		}
	}
	return m.write(id, keys, vals, stale)
}

// changed returns endpoint id's keys and entries of want (EndpointId 0)
// that its shadow does not hold.
func (m *Maps) changed(id EndpointID, want map[policyPolicyKey]policyPolicyEntry) ([]policyPolicyKey, []policyPolicyEntry) {
	cur := m.shadow[id]
	var (
		keys []policyPolicyKey
		vals []policyPolicyEntry
	)
	for k, v := range want {
		k = forEndpoint(k, id)
		if old, ok := cur[k]; !ok || old != v {
			keys = append(keys, k)
			vals = append(vals, v)
		}
	}
	return keys, vals
}

// write writes keys[i] -> vals[i] for endpoint id, then deletes stale, and
// keeps the shadow equal to what was done.
func (m *Maps) write(id EndpointID, keys []policyPolicyKey, vals []policyPolicyEntry, stale []policyPolicyKey) error {
	if len(keys) == 0 && len(stale) == 0 {
		return nil
	}
	m.dirty.Store(true)
	cur := m.shadow[id]
	if cur == nil {
		cur = make(map[policyPolicyKey]policyPolicyEntry, len(keys))
		m.shadow[id] = cur
	}
	defer func() {
		if len(cur) == 0 {
			delete(m.shadow, id)
		}
	}()
	n, err := m.writePolicy(keys, vals)
	for i := range n {
		cur[keys[i]] = vals[i]
	}
	if err != nil {
		return err
	}
	n, err = m.deletePolicy(stale)
	for _, k := range stale[:n] {
		delete(cur, k)
	}
	return err
}

// writePolicy writes keys[i] -> vals[i] in order, returning how many it wrote.
func (m *Maps) writePolicy(keys []policyPolicyKey, vals []policyPolicyEntry) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	if !m.noBatch {
		n, err := m.policy.BatchUpdate(keys, vals, nil)
		switch {
		case err == nil:
			return n, nil
		case !errors.Is(err, ebpf.ErrNotSupported):
			return n, fmt.Errorf("write %s: %w", keyString(keys[min(n, len(keys)-1)]), err)
		}
		m.noBatch = true
	}
	for i := range keys {
		if err := m.policy.Update(&keys[i], &vals[i], ebpf.UpdateAny); err != nil {
			return i, fmt.Errorf("write %s: %w", keyString(keys[i]), err)
		}
	}
	return len(keys), nil
}

// deletePolicy deletes keys in order (missing ones are fine), returning how
// many are gone.
func (m *Maps) deletePolicy(keys []policyPolicyKey) (int, error) {
	done := 0
	for !m.noBatch && done < len(keys) {
		n, err := m.policy.BatchDelete(keys[done:], nil)
		done += n
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrKeyNotExist):
			done++ // already gone: go on after it
		case errors.Is(err, ebpf.ErrNotSupported):
			m.noBatch = true
		default:
			return done, fmt.Errorf("delete %s: %w", keyString(keys[done]), err)
		}
	}
	for ; done < len(keys); done++ {
		if err := deleteIfExists(m.policy, &keys[done]); err != nil {
			return done, fmt.Errorf("delete %s: %w", keyString(keys[done]), err)
		}
	}
	return done, nil
}

func deleteIfExists(m *ebpf.Map, key any) error {
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

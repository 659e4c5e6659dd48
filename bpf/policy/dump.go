package policy

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// IPCacheEntry is one ipcache prefix.
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity Identity
}

// EndpointEntry is one endpoint and its interface.
type EndpointEntry struct {
	Ifindex  int
	Endpoint Endpoint
}

// PolicyMapEntry is one policy map entry: a port block shows as its range.
// DerivedDeny and DerivedAuth say the entry lies inside a deny or an
// authentication-requiring entry, which the datapath applies to it.
type PolicyMapEntry struct {
	Key         PolicyKey
	Entry       PolicyEntry
	DerivedDeny bool
	DerivedAuth bool
}

// LocalRouteEntry is one local route (host routing), by the pod's address.
type LocalRouteEntry struct {
	Addr  netip.Addr
	Route LocalRoute
}

// Dump is every entry of the ipcache, endpoint, local route and policy
// maps, sorted.
type Dump struct {
	IPCache   []IPCacheEntry
	Endpoints []EndpointEntry
	Routes    []LocalRouteEntry
	Policy    []PolicyMapEntry
}

// Dump reads the ipcache, endpoint and policy maps (for `membrane bpf
// policy list`; conntrack has DumpConntrack).
func (m *Maps) Dump() (Dump, error) {
	var d Dump
	var (
		ik policyIpcache4Key
		iv policyIpcacheEntry
	)
	it := m.ipcache.Iterate()
	for it.Next(&ik, &iv) {
		d.IPCache = append(d.IPCache, IPCacheEntry{
			Prefix:   netip.PrefixFrom(netToAddr(ik.Addr), int(ik.Prefixlen)),
			Identity: Identity(iv.Identity),
		})
	}
	if err := it.Err(); err != nil {
		return Dump{}, fmt.Errorf("dump ipcache: %w", err)
	}
	slices.SortFunc(d.IPCache, func(a, b IPCacheEntry) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})

	var (
		ifindex uint32
		ev      policyEndpointInfo
	)
	it = m.endpoints.Iterate()
	for it.Next(&ifindex, &ev) {
		d.Endpoints = append(d.Endpoints, EndpointEntry{Ifindex: int(ifindex), Endpoint: endpointFromValue(ev)})
	}
	if err := it.Err(); err != nil {
		return Dump{}, fmt.Errorf("dump endpoints: %w", err)
	}
	slices.SortFunc(d.Endpoints, func(a, b EndpointEntry) int { return cmp.Compare(a.Ifindex, b.Ifindex) })

	var (
		raddr uint32
		rv    policyLocalRoute
	)
	it = m.routes.Iterate()
	for it.Next(&raddr, &rv) {
		d.Routes = append(d.Routes, LocalRouteEntry{Addr: netToAddr(raddr), Route: routeFromValue(rv)})
	}
	if err := it.Err(); err != nil {
		return Dump{}, fmt.Errorf("dump local routes: %w", err)
	}
	slices.SortFunc(d.Routes, func(a, b LocalRouteEntry) int { return a.Addr.Compare(b.Addr) })

	var (
		pk policyPolicyKey
		pv policyPolicyEntry
	)
	it = m.policy.Iterate()
	for it.Next(&pk, &pv) {
		d.Policy = append(d.Policy, PolicyMapEntry{
			Key:         keyFromMap(pk),
			Entry:       entryFromMap(pv),
			DerivedDeny: pv.Flags&flagDerivedDeny != 0,
			DerivedAuth: pv.Flags&flagDerivedAuth != 0,
		})
	}
	if err := it.Err(); err != nil {
		return Dump{}, fmt.Errorf("dump policy: %w", err)
	}
	slices.SortFunc(d.Policy, func(a, b PolicyMapEntry) int { return comparePolicyKeys(a.Key, b.Key) })
	return d, nil
}

func comparePolicyKeys(a, b PolicyKey) int {
	return cmp.Or(
		cmp.Compare(a.EndpointID, b.EndpointID),
		cmp.Compare(a.Direction, b.Direction),
		cmp.Compare(a.RemoteIdentity, b.RemoteIdentity),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Port, b.Port),
		cmp.Compare(a.EndPort, b.EndPort),
	)
}

// Conn is one conntrack entry: the flow as its first packet went.
type Conn struct {
	Ifindex   int
	Direction Direction // of the opening packet, relative to the endpoint
	Proto     Proto
	// Src and Dst of the opening packet. ICMP echo: the echo ID is Src's port.
	Src, Dst netip.AddrPort
	// TCP flags seen from each side.
	OrigFlags, ReplyFlags TCPFlags
	ReplySeen             bool
	ProxyPort             uint16
	// Denied: the policy no longer allows the flow, and why its packets are
	// dropped (DropNone: allowed).
	Denied       DropReason
	Age, Idle    time.Duration
	PacketsOrig  uint64
	BytesOrig    uint64
	PacketsReply uint64
	BytesReply   uint64
}

// ct4_entry.state: byte 0 the opener's TCP flags, byte 1 the peer's, then
// CT_F_* (bpf/lib/conntrack4.h).
const (
	ctReplySeen        = 1 << 16
	ctStateDeniedShift = 24
)

// DumpConntrack reads the conntrack map (expired entries included until a
// packet or the LRU removes them).
func (m *Maps) DumpConntrack() ([]Conn, error) {
	now, err := monotonicNow()
	if err != nil {
		return nil, err
	}
	var (
		k   policyCt4Key
		v   policyCt4Entry
		out []Conn
	)
	it := m.ct.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Conn{
			Ifindex:      int(k.Ifindex),
			Direction:    Direction(k.Direction),
			Proto:        Proto(k.Proto),
			Src:          netip.AddrPortFrom(netToAddr(k.Saddr), netToPort(k.Sport)),
			Dst:          netip.AddrPortFrom(netToAddr(k.Daddr), netToPort(k.Dport)),
			OrigFlags:    TCPFlags(v.State),
			ReplyFlags:   TCPFlags(v.State >> 8),
			ReplySeen:    v.State&ctReplySeen != 0,
			ProxyPort:    v.ProxyPort,
			Denied:       DropReason(v.State >> ctStateDeniedShift),
			Age:          time.Duration(now - int64(v.CreatedNs)),
			Idle:         time.Duration(now - int64(v.LastSeenNs)),
			PacketsOrig:  v.PacketsOrig,
			BytesOrig:    v.BytesOrig,
			PacketsReply: v.PacketsReply,
			BytesReply:   v.BytesReply,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("dump conntrack: %w", err)
	}
	slices.SortFunc(out, func(a, b Conn) int {
		return cmp.Or(cmp.Compare(a.Ifindex, b.Ifindex), a.Src.Compare(b.Src), a.Dst.Compare(b.Dst),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Direction, b.Direction))
	})
	return out, nil
}

// MapUsage is how full a map is.
type MapUsage struct {
	Name       string // pinned name
	Entries    int
	MaxEntries int
}

// Count counts the entries of the ipcache, endpoint, policy, conntrack and
// fragment maps (for pressure metrics). Hash maps are read in batches where
// the kernel can (5.6+); the LPM tries key by key, but the Datapath that
// writes the policy map counts its copy of it (see Maps).
func (m *Maps) Count() ([]MapUsage, error) {
	var out []MapUsage
	countPolicy := countKeys
	if m.writer {
		countPolicy = func(*ebpf.Map) (int, error) { return m.policyEntries(), nil }
	}
	for _, mp := range []struct {
		name  string
		m     *ebpf.Map
		count func(*ebpf.Map) (int, error)
	}{
		{policyMapMembraneIpc4, m.ipcache, countKeys},
		{policyMapMembraneEps, m.endpoints, countBatched[uint32, policyEndpointInfo]},
		{policyMapMembraneLroute4, m.routes, countBatched[uint32, policyLocalRoute]},
		{policyMapMembranePolicy, m.policy, countPolicy},
		{policyMapMembraneCt4, m.ct, countBatched[policyCt4Key, policyCt4Entry]},
		{policyMapMembraneFrag4, m.frags, countBatched[policyFrag4Key, policyFrag4Ports]},
	} {
		n, err := mp.count(mp.m)
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", mp.name, err)
		}
		out = append(out, MapUsage{Name: mp.name, Entries: n, MaxEntries: int(mp.m.MaxEntries())})
	}
	return out, nil
}

// countKeys walks the keys (no values), at most max_entries of them: a
// concurrent delete can restart a hash map's walk.
func countKeys(m *ebpf.Map) (int, error) {
	var (
		n    int
		prev any
		key  = make([]byte, m.KeySize())
		next = make([]byte, m.KeySize())
	)
	for n < int(m.MaxEntries()) {
		err := m.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		} else if err != nil {
			return n, err
		}
		n++
		copy(key, next)
		prev = key
	}
	return n, nil
}

func countBatched[K, V any](m *ebpf.Map) (int, error) {
	const chunk = 4096
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]K, chunk)
		vals   = make([]V, chunk)
		total  int
	)
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return total, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return countKeys(m)
		case err != nil:
			return total, err
		}
	}
}

// Count is packets and bytes.
type Count struct {
	Packets uint64
	Bytes   uint64
}

// DirectionCounters are the verdicts of one direction.
type DirectionCounters struct {
	Forwarded  Count
	Redirected Count
	Dropped    map[DropReason]Count // reasons seen
}

// Counters are the datapath's verdict metrics and event counters since the
// maps were created (they survive agent restarts), summed over CPUs.
type Counters struct {
	Ingress, Egress DirectionCounters
	NotIPv4         uint64 // packets passed untouched (ARP, IPv6, ...)
	EventsLost      uint64 // events the ring buffer had no room for
	EventsSent      uint64 // events written to the ring buffer
	CTPickedUp      uint64 // TCP connections of an untracked time picked up (Endpoint.Pickup)
	CTCreated       uint64 // conntrack entries created
	CTExpired       uint64 // expired entries removed by lookups
	CTReopened      uint64 // bare SYNs on closed connections, checked as new
	CTRechecked     uint64 // tracked flows checked again after a policy change
	CTRelated       uint64 // ICMP errors passed as related to a tracked flow
	ProxyHairpin    uint64 // packets hairpinned to the L7 proxy, passed unchecked by policy_from_pod
	HostRouted      uint64 // packets delivered to a pod of the node by host routing (from a pod or an uplink)
	UplinkRouted    uint64 // of those, packets from other nodes (SetUplinks)
}

// Direction returns the counters of d.
func (c *Counters) Direction(d Direction) *DirectionCounters {
	if d == Egress {
		return &c.Egress
	}
	return &c.Ingress
}

// Dropped sums the drops of both directions by reason.
func (c Counters) Dropped(r DropReason) uint64 {
	return c.Ingress.Dropped[r].Packets + c.Egress.Dropped[r].Packets
}

const metricsPerDir = 256

// Counters reads and sums the per-CPU counters.
func (m *Maps) Counters() (Counters, error) {
	var c Counters
	var vals []policyMetricsValue
	for _, dir := range []Direction{Ingress, Egress} {
		dc := c.Direction(dir)
		dc.Dropped = map[DropReason]Count{}
		for code := range metricsPerDir {
			idx := uint32(dir)*metricsPerDir + uint32(code)
			if err := m.metrics.Lookup(idx, &vals); err != nil {
				return Counters{}, fmt.Errorf("read metrics %d: %w", idx, err)
			}
			var sum Count
			for _, v := range vals {
				sum.Packets += v.Packets
				sum.Bytes += v.Bytes
			}
			switch {
			case code == 0:
				dc.Forwarded = sum
			case code == 1:
				dc.Redirected = sum
			case sum.Packets != 0:
				dc.Dropped[DropReason(code)] = sum
			}
		}
	}
	for idx, dst := range map[policyPolCounter]*uint64{
		policyPolCounterPOL_CNT_NOT_IPV4:      &c.NotIPv4,
		policyPolCounterPOL_CNT_EVENTS_LOST:   &c.EventsLost,
		policyPolCounterPOL_CNT_CT_CREATED:    &c.CTCreated,
		policyPolCounterPOL_CNT_CT_EXPIRED:    &c.CTExpired,
		policyPolCounterPOL_CNT_CT_REOPENED:   &c.CTReopened,
		policyPolCounterPOL_CNT_CT_RELATED:    &c.CTRelated,
		policyPolCounterPOL_CNT_PROXY_HAIRPIN: &c.ProxyHairpin,
		policyPolCounterPOL_CNT_EVENTS_SENT:   &c.EventsSent,
		policyPolCounterPOL_CNT_CT_PICKED_UP:  &c.CTPickedUp,
		policyPolCounterPOL_CNT_HOST_ROUTED:   &c.HostRouted,
		policyPolCounterPOL_CNT_UPLINK_ROUTED: &c.UplinkRouted,
		policyPolCounterPOL_CNT_CT_RECHECKED:  &c.CTRechecked,
	} {
		var perCPU []uint64
		if err := m.counters.Lookup(idx, &perCPU); err != nil {
			return Counters{}, fmt.Errorf("read counter %d: %w", idx, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return c, nil
}

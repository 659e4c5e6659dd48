package socklb

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// Service is one frontend as the maps hold it.
type Service struct {
	Frontend Frontend
	Info     ServiceInfo
	// Backends by slot (slot i+1 holds Backends[i]); 0 marks a missing slot.
	Backends []BackendID
}

// BackendEntry is one backend as the maps hold it.
type BackendEntry struct {
	ID      BackendID
	Backend Backend
}

// RevNATEntry is one reverse-NAT entry: the frontend address shown for replies.
type RevNATEntry struct {
	ID       uint16
	Frontend netip.AddrPort
}

// Dump is every entry of the service, backend and reverse-NAT maps, sorted.
type Dump struct {
	Services []Service
	Backends []BackendEntry
	RevNAT   []RevNATEntry
}

// Dump reads all entries (for `membrane bpf lb list`). It is consistent with
// respect to writers using this Maps, not to other processes.
func (m *Maps) Dump() (Dump, error) {
	m.mu.Lock()
	defer m.mu.Unlock()

	var d Dump
	services, err := m.dumpServices()
	if err != nil {
		return Dump{}, err
	}
	d.Services = services

	var (
		id uint32
		be socklbLb4Backend
	)
	it := m.backends.Iterate()
	for it.Next(&id, &be) {
		d.Backends = append(d.Backends, BackendEntry{ID: BackendID(id), Backend: backendFromValue(be)})
	}
	if err := it.Err(); err != nil {
		return Dump{}, fmt.Errorf("dump backends: %w", err)
	}
	slices.SortFunc(d.Backends, func(a, b BackendEntry) int { return cmp.Compare(a.ID, b.ID) })

	var (
		rid uint16
		rn  socklbLb4ReverseNat
	)
	it = m.revNAT.Iterate()
	for it.Next(&rid, &rn) {
		d.RevNAT = append(d.RevNAT, RevNATEntry{
			ID:       rid,
			Frontend: netip.AddrPortFrom(netToAddr(rn.Address), netToPort(rn.Port)),
		})
	}
	if err := it.Err(); err != nil {
		return Dump{}, fmt.Errorf("dump rev-NAT: %w", err)
	}
	slices.SortFunc(d.RevNAT, func(a, b RevNATEntry) int { return cmp.Compare(a.ID, b.ID) })
	return d, nil
}

func (m *Maps) dumpServices() ([]Service, error) {
	type slotKey struct {
		fe   Frontend
		slot uint16
	}
	entries := make(map[Frontend]socklbLb4Service)
	slots := make(map[slotKey]BackendID)

	var (
		key socklbLb4Key
		val socklbLb4Service
	)
	it := m.services.Iterate()
	for it.Next(&key, &val) {
		fe := frontendFromKey(key)
		if key.BackendSlot == 0 {
			entries[fe] = val
		} else {
			slots[slotKey{fe, key.BackendSlot}] = BackendID(val.BackendId)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("dump services: %w", err)
	}

	out := make([]Service, 0, len(entries))
	for fe, e := range entries {
		s := Service{Frontend: fe, Info: infoFromEntry(e), Backends: make([]BackendID, e.Count)}
		for i := range s.Backends {
			s.Backends[i] = slots[slotKey{fe, uint16(i + 1)}]
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Service) int { return compareFrontends(a.Frontend, b.Frontend) })
	return out, nil
}

func compareFrontends(a, b Frontend) int {
	return cmp.Or(
		a.Addr.Compare(b.Addr),
		cmp.Compare(a.Port, b.Port),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Scope, b.Scope),
	)
}

// Counters are the datapath's event counts since the counter map was created
// (they survive agent restarts), summed over CPUs.
type Counters struct {
	Translated        uint64 // connect/sendmsg rewritten to a backend
	ReverseTranslated uint64 // recvmsg/getpeername shown the service address
	NoBackend         uint64 // refused: service without backends
	SlotMissing       uint64 // gave up: picked slots kept missing (racing updates); untranslated
	BackendMissing    uint64 // gave up: picked slots named missing backends; untranslated
	AffinityHits      uint64 // backend chosen by session affinity
	ReverseStale      uint64 // reverse entry of a deleted service dropped
	Retried           uint64 // a pick raced with an update and was made again
}

// Counters reads and sums the per-CPU counters.
func (m *Maps) Counters() (Counters, error) {
	var c Counters
	for idx, dst := range map[socklbLbCounter]*uint64{
		socklbLbCounterLB_CNT_TRANSLATED:      &c.Translated,
		socklbLbCounterLB_CNT_REV_TRANSLATED:  &c.ReverseTranslated,
		socklbLbCounterLB_CNT_NO_BACKEND:      &c.NoBackend,
		socklbLbCounterLB_CNT_SLOT_MISSING:    &c.SlotMissing,
		socklbLbCounterLB_CNT_BACKEND_MISSING: &c.BackendMissing,
		socklbLbCounterLB_CNT_AFFINITY_HIT:    &c.AffinityHits,
		socklbLbCounterLB_CNT_REV_STALE:       &c.ReverseStale,
		socklbLbCounterLB_CNT_RETRIED:         &c.Retried,
	} {
		var perCPU []uint64
		if err := m.counters.Lookup(idx, &perCPU); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return Counters{}, fmt.Errorf("read counter %d: %w", idx, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return c, nil
}

package socklb

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
)

// Maps is the typed, incremental write API over the load balancer's maps.
// Its methods are safe for concurrent use; writers are serialized.
//
// Each call touches only the keys of the frontend or backend it names, and
// orders its writes so that a connect racing with it sees either the old or
// the new service, never a slot count pointing at a missing slot.
type Maps struct {
	mu sync.Mutex

	services      *ebpf.Map // membrane_svc4: lb4_key -> lb4_service
	backends      *ebpf.Map // membrane_be4: backend_id -> lb4_backend
	revNAT        *ebpf.Map // membrane_rnat4: rev_nat_id -> lb4_reverse_nat
	revSock       *ebpf.Map // membrane_rsk4: (cookie, backend) -> frontend (LRU)
	affinity      *ebpf.Map // membrane_aff4: (netns cookie, rev_nat_id) -> backend (LRU)
	affinityMatch *ebpf.Map // membrane_affm4: (backend_id, rev_nat_id) -> 1
	counters      *ebpf.Map // membrane_lbstat: lb_counter -> per-CPU u64
}

func newMaps(m *socklbMaps) *Maps {
	return &Maps{
		services:      m.MembraneSvc4,
		backends:      m.MembraneBe4,
		revNAT:        m.MembraneRnat4,
		revSock:       m.MembraneRsk4,
		affinity:      m.MembraneAff4,
		affinityMatch: m.MembraneAffm4,
		counters:      m.MembraneLbstat,
	}
}

// Close releases the map file descriptors; pinned maps stay.
func (m *Maps) Close() error {
	var errs []error
	for _, mp := range []*ebpf.Map{m.services, m.backends, m.revNAT, m.revSock, m.affinity, m.affinityMatch, m.counters} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

// UpsertBackend creates or replaces a backend. Upsert a backend before the
// services that name it.
func (m *Maps) UpsertBackend(id BackendID, b Backend) error {
	if id == 0 {
		return fmt.Errorf("upsert backend %s: ID 0: %w", b, ErrInvalid)
	}
	v, err := b.value()
	if err != nil {
		return fmt.Errorf("upsert backend %d: %w", id, err)
	}
	if err := m.backends.Update(uint32(id), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upsert backend %d (%s): %w", id, b, err)
	}
	return nil
}

// DeleteBackend removes a backend; a missing one is fine. Delete a backend
// only after no service names it (a connect that picks it anyway is left
// untranslated and counted as BackendMissing).
func (m *Maps) DeleteBackend(id BackendID) error {
	if err := m.backends.Delete(uint32(id)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete backend %d: %w", id, err)
	}
	return nil
}

// UpsertService creates a frontend or changes its service entry and backend
// list (an empty list makes connects fail with ECONNREFUSED). It writes the
// reverse-NAT entry and new backend slots first, then the slot-0 entry with
// the new count, then deletes slots beyond it. Unchanged entries are not
// rewritten, so upserting the same state again only reads.
func (m *Maps) UpsertService(fe Frontend, info ServiceInfo, backends []BackendID) error {
	if err := m.upsertService(fe, info, backends); err != nil {
		return fmt.Errorf("upsert service %s: %w", fe, err)
	}
	return nil
}

func (m *Maps) upsertService(fe Frontend, info ServiceInfo, backends []BackendID) error {
	key, err := fe.serviceKey(0)
	if err != nil {
		return err
	}
	if len(backends) > math.MaxUint16 {
		return fmt.Errorf("%d backends, at most %d: %w", len(backends), math.MaxUint16, ErrInvalid)
	}
	entry, err := info.entry(len(backends))
	if err != nil {
		return err
	}
	seen := make(map[BackendID]struct{}, len(backends))
	for _, id := range backends {
		if id == 0 {
			return fmt.Errorf("backend ID 0: %w", ErrInvalid)
		}
		if _, dup := seen[id]; dup {
			return fmt.Errorf("backend %d listed twice: %w", id, ErrInvalid)
		}
		seen[id] = struct{}{}
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	old, oldIDs, exists, err := m.readService(key)
	if err != nil {
		return err
	}
	if err := m.claimRevNAT(key, entry.RevNatId, exists && old.RevNatId == entry.RevNatId); err != nil {
		return err
	}

	// Affinity match entries the new state needs and the old one had.
	oldMatch := matchSet(old, oldIDs, exists)
	newMatch := matchSet(entry, backends, true)
	for k := range newMatch {
		if _, ok := oldMatch[k]; ok {
			continue
		}
		if err := m.affinityMatch.Update(&k, uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("add affinity match (backend %d): %w", k.BackendId, err)
		}
	}

	for i, id := range backends {
		slot := uint16(i + 1)
		if i < len(oldIDs) && oldIDs[i] == id {
			continue
		}
		key.BackendSlot = slot
		if err := m.services.Update(&key, &socklbLb4Service{BackendId: uint32(id)}, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write slot %d: %w", slot, err)
		}
	}

	key.BackendSlot = 0
	if !exists || old != entry {
		if err := m.services.Update(&key, &entry, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write service entry: %w", err)
		}
	}

	for slot := len(backends) + 1; slot <= len(oldIDs); slot++ {
		key.BackendSlot = uint16(slot)
		if err := deleteIfExists(m.services, &key); err != nil {
			return fmt.Errorf("delete slot %d: %w", slot, err)
		}
	}
	key.BackendSlot = 0

	for k := range oldMatch {
		if _, ok := newMatch[k]; ok {
			continue
		}
		if err := deleteIfExists(m.affinityMatch, &k); err != nil {
			return fmt.Errorf("delete affinity match (backend %d): %w", k.BackendId, err)
		}
	}

	if exists && old.RevNatId != entry.RevNatId {
		if err := m.releaseRevNAT(key, old.RevNatId); err != nil {
			return err
		}
	}
	return nil
}

// DeleteService removes a frontend: first its service entry (connects stop
// being translated), then its backend slots, affinity match entries and
// reverse-NAT entry. A missing frontend is fine.
func (m *Maps) DeleteService(fe Frontend) error {
	if err := m.deleteService(fe); err != nil {
		return fmt.Errorf("delete service %s: %w", fe, err)
	}
	return nil
}

func (m *Maps) deleteService(fe Frontend) error {
	key, err := fe.serviceKey(0)
	if err != nil {
		return err
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	old, oldIDs, exists, err := m.readService(key)
	if err != nil || !exists {
		return err
	}
	if err := deleteIfExists(m.services, &key); err != nil {
		return fmt.Errorf("delete service entry: %w", err)
	}
	for slot := 1; slot <= len(oldIDs); slot++ {
		key.BackendSlot = uint16(slot)
		if err := deleteIfExists(m.services, &key); err != nil {
			return fmt.Errorf("delete slot %d: %w", slot, err)
		}
	}
	key.BackendSlot = 0
	for k := range matchSet(old, oldIDs, true) {
		if err := deleteIfExists(m.affinityMatch, &k); err != nil {
			return fmt.Errorf("delete affinity match (backend %d): %w", k.BackendId, err)
		}
	}
	return m.releaseRevNAT(key, old.RevNatId)
}

// readService returns a frontend's slot-0 entry and the backend IDs of
// slots 1..count (0 where a slot is missing).
func (m *Maps) readService(key socklbLb4Key) (socklbLb4Service, []BackendID, bool, error) {
	var entry socklbLb4Service
	key.BackendSlot = 0
	if err := m.services.Lookup(&key, &entry); errors.Is(err, ebpf.ErrKeyNotExist) {
		return socklbLb4Service{}, nil, false, nil
	} else if err != nil {
		return socklbLb4Service{}, nil, false, fmt.Errorf("read service entry: %w", err)
	}
	ids := make([]BackendID, entry.Count)
	for i := range ids {
		key.BackendSlot = uint16(i + 1)
		var slot socklbLb4Service
		err := m.services.Lookup(&key, &slot)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
		case err != nil:
			return socklbLb4Service{}, nil, false, fmt.Errorf("read slot %d: %w", i+1, err)
		default:
			ids[i] = BackendID(slot.BackendId)
		}
	}
	return entry, ids, true, nil
}

// claimRevNAT points the reverse-NAT entry id at the frontend of key, unless
// another frontend still holds id. held says key's service entry has id.
func (m *Maps) claimRevNAT(key socklbLb4Key, id uint16, held bool) error {
	want := socklbLb4ReverseNat{Address: key.Address, Port: key.Dport}
	var cur socklbLb4ReverseNat
	err := m.revNAT.Lookup(id, &cur)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
	case err != nil:
		return fmt.Errorf("read rev-NAT %d: %w", id, err)
	case held && cur == want:
		return nil
	default:
		// Frontends that could hold id: all those with cur's address and port.
		holder := key
		holder.Address, holder.Dport, holder.BackendSlot = cur.Address, cur.Port, 0
		for _, proto := range []Proto{TCP, UDP} {
			for _, scope := range []Scope{ScopeExternal, ScopeInternal} {
				holder.Proto, holder.Scope = uint8(proto), uint8(scope)
				if holder == key {
					continue
				}
				var e socklbLb4Service
				if err := m.services.Lookup(&holder, &e); err == nil && e.RevNatId == id {
					return fmt.Errorf("rev-NAT %d held by %s: %w", id, frontendFromKey(holder), ErrRevNATInUse)
				} else if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("read service entry of %s: %w", frontendFromKey(holder), err)
				}
			}
		}
		if cur == want {
			return nil
		}
	}
	if err := m.revNAT.Update(id, &want, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write rev-NAT %d: %w", id, err)
	}
	return nil
}

// releaseRevNAT deletes the reverse-NAT entry id if it still names key's frontend.
func (m *Maps) releaseRevNAT(key socklbLb4Key, id uint16) error {
	var cur socklbLb4ReverseNat
	if err := m.revNAT.Lookup(id, &cur); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read rev-NAT %d: %w", id, err)
	}
	if !cur.sameAddrPort(key) {
		return nil
	}
	if err := deleteIfExists(m.revNAT, id); err != nil {
		return fmt.Errorf("delete rev-NAT %d: %w", id, err)
	}
	return nil
}

// matchSet is the set of affinity match keys a service entry implies.
func matchSet(entry socklbLb4Service, ids []BackendID, exists bool) map[socklbLb4AffinityMatchKey]struct{} {
	if !exists || entry.Flags&uint8(FlagAffinity) == 0 {
		return nil
	}
	set := make(map[socklbLb4AffinityMatchKey]struct{}, len(ids))
	for _, id := range ids {
		if id != 0 {
			set[socklbLb4AffinityMatchKey{BackendId: uint32(id), RevNatId: entry.RevNatId}] = struct{}{}
		}
	}
	return set
}

func deleteIfExists(m *ebpf.Map, key any) error {
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

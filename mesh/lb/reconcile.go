package lb

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/membrane-mesh/membrane/mesh/model"
)

// BackendID names a backend in the datapath.
type BackendID uint32

// ServiceInfo is what the datapath keeps per frontend besides its backends.
type ServiceInfo struct {
	// RevNatID names the frontend for reverse translation of replies.
	RevNatID        uint16
	AffinitySeconds uint32
}

// Datapath is the service table the reconciler keeps: the eBPF maps on a
// node, or a fake in tests.
type Datapath interface {
	UpsertBackend(id BackendID, b Backend) error
	DeleteBackend(id BackendID) error
	UpsertService(f Frontend, info ServiceInfo, backends []BackendID) error
	DeleteService(f Frontend) error
}

// Programmed is one frontend as the datapath holds it.
type Programmed struct {
	Info     ServiceInfo
	Backends []BackendID
}

// Reconciler keeps a Datapath equal to the entries of every service. Each
// call touches only the map entries of the service it is about.
type Reconciler struct {
	dp Datapath

	mu        sync.Mutex
	services  map[model.ServiceID][]Frontend
	frontends map[Frontend]*frontendState
	backends  map[Backend]*backendState
	byID      map[BackendID]Backend
	revNats   map[uint16]Frontend
	// restored frontends came from the datapath at start and are not yet
	// claimed by a service; Prune deletes what is left of them.
	restored   map[Frontend]bool
	nextID     BackendID
	nextRevNat uint16
}

type frontendState struct {
	owner  model.ServiceID
	entry  Entry
	info   ServiceInfo
	ids    []BackendID
	synced bool // what the datapath holds equals entry
}

type backendState struct {
	id   BackendID
	refs int
}

// NewReconciler returns a reconciler for dp.
func NewReconciler(dp Datapath) *Reconciler {
	return &Reconciler{
		dp:        dp,
		services:  map[model.ServiceID][]Frontend{},
		frontends: map[Frontend]*frontendState{},
		backends:  map[Backend]*backendState{},
		byID:      map[BackendID]Backend{},
		revNats:   map[uint16]Frontend{},
		restored:  map[Frontend]bool{},
	}
}

// Restore adopts what the datapath already holds (after an agent restart),
// so that IDs are reused and unchanged entries are not rewritten. Call it
// before the first Apply.
func (r *Reconciler) Restore(backends map[BackendID]Backend, services map[Frontend]Programmed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, b := range backends {
		r.backends[b] = &backendState{id: id}
		r.byID[id] = b
		r.nextID = max(r.nextID, id)
	}
	for f, p := range services {
		r.frontends[f] = &frontendState{info: p.Info, ids: slices.Clone(p.Backends)}
		r.revNats[p.Info.RevNatID] = f
		r.nextRevNat = max(r.nextRevNat, p.Info.RevNatID)
		r.restored[f] = true
		for _, id := range p.Backends {
			if b, ok := r.byID[id]; ok {
				r.backends[b].refs++
			}
		}
	}
}

// Apply makes the datapath hold exactly entries for service id (nil entries
// remove the service). It returns the problems it skipped past; the rest of
// the service is programmed regardless.
func (r *Reconciler) Apply(id model.ServiceID, entries []Entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	want := map[Frontend]bool{}
	var kept []Frontend
	for _, e := range entries {
		if want[e.Frontend] {
			continue
		}
		if fs, ok := r.frontends[e.Frontend]; ok && !r.restored[e.Frontend] && fs.owner != id {
			errs = append(errs, fmt.Errorf("frontend %s of %s is already used by %s", e.Frontend, id, fs.owner))
			continue
		}
		if err := r.program(id, e); err != nil {
			errs = append(errs, err)
			continue
		}
		want[e.Frontend] = true
		kept = append(kept, e.Frontend)
	}
	for _, f := range r.services[id] {
		if !want[f] {
			if err := r.remove(f); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(kept) == 0 {
		delete(r.services, id)
	} else {
		r.services[id] = kept
	}
	return errors.Join(errs...)
}

// program writes one frontend: new backends first, then the service, then
// backends no longer referenced.
func (r *Reconciler) program(owner model.ServiceID, e Entry) error {
	fs, ok := r.frontends[e.Frontend]
	if !ok {
		fs = &frontendState{}
	}
	ids := make([]BackendID, 0, len(e.Backends))
	for _, b := range e.Backends {
		id, err := r.acquire(b.Backend)
		if err != nil {
			r.releaseAll(ids)
			return err
		}
		ids = append(ids, id)
	}
	info := ServiceInfo{RevNatID: fs.info.RevNatID, AffinitySeconds: e.AffinitySeconds}
	if info.RevNatID == 0 {
		rn, err := r.allocRevNat(e.Frontend)
		if err != nil {
			r.releaseAll(ids)
			return err
		}
		info.RevNatID = rn
	}
	if !(fs.synced || r.restored[e.Frontend]) || info != fs.info || !slices.Equal(ids, fs.ids) {
		if err := r.dp.UpsertService(e.Frontend, info, ids); err != nil {
			r.releaseAll(ids)
			if !ok {
				delete(r.revNats, info.RevNatID)
			}
			return fmt.Errorf("program %s of %s: %w", e.Frontend, owner, err)
		}
	}
	old := fs.ids
	fs.owner, fs.entry, fs.info, fs.ids, fs.synced = owner, e, info, ids, true
	r.frontends[e.Frontend] = fs
	delete(r.restored, e.Frontend)
	r.releaseAll(old)
	return nil
}

// remove deletes a frontend and releases its backends.
func (r *Reconciler) remove(f Frontend) error {
	fs, ok := r.frontends[f]
	if !ok {
		return nil
	}
	if err := r.dp.DeleteService(f); err != nil {
		return fmt.Errorf("delete %s: %w", f, err)
	}
	delete(r.frontends, f)
	delete(r.revNats, fs.info.RevNatID)
	delete(r.restored, f)
	r.releaseAll(fs.ids)
	return nil
}

// Prune deletes whatever was restored from the datapath and not claimed by a
// service since. Call it once every source has synced.
func (r *Reconciler) Prune() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for f := range r.restored {
		if err := r.remove(f); err != nil {
			errs = append(errs, err)
		}
	}
	for b, st := range r.backends {
		if st.refs == 0 {
			errs = append(errs, r.deleteBackend(b, st))
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) acquire(b Backend) (BackendID, error) {
	if st, ok := r.backends[b]; ok {
		st.refs++
		return st.id, nil
	}
	id, err := r.allocID()
	if err != nil {
		return 0, err
	}
	if err := r.dp.UpsertBackend(id, b); err != nil {
		return 0, fmt.Errorf("program backend %s: %w", b, err)
	}
	r.backends[b] = &backendState{id: id, refs: 1}
	r.byID[id] = b
	return id, nil
}

// releaseAll drops one reference of each backend and deletes unreferenced
// ones (after the services that used them were rewritten).
func (r *Reconciler) releaseAll(ids []BackendID) {
	for _, id := range ids {
		b, ok := r.byID[id]
		if !ok {
			continue
		}
		st := r.backends[b]
		st.refs--
		if st.refs <= 0 {
			_ = r.deleteBackend(b, st)
		}
	}
}

func (r *Reconciler) deleteBackend(b Backend, st *backendState) error {
	if err := r.dp.DeleteBackend(st.id); err != nil {
		return fmt.Errorf("delete backend %s: %w", b, err)
	}
	delete(r.backends, b)
	delete(r.byID, st.id)
	return nil
}

func (r *Reconciler) allocID() (BackendID, error) {
	for range 1 << 20 {
		r.nextID++
		if r.nextID == 0 {
			r.nextID = 1
		}
		if _, used := r.byID[r.nextID]; !used {
			return r.nextID, nil
		}
	}
	return 0, errors.New("allocate backend ID: none free")
}

func (r *Reconciler) allocRevNat(f Frontend) (uint16, error) {
	for range 1 << 16 {
		r.nextRevNat++
		if r.nextRevNat == 0 {
			r.nextRevNat = 1
		}
		if _, used := r.revNats[r.nextRevNat]; !used {
			r.revNats[r.nextRevNat] = f
			return r.nextRevNat, nil
		}
	}
	return 0, errors.New("allocate reverse-NAT ID: all 65535 in use")
}

// Snapshot returns the programmed entries of every service, for the CLI.
func (r *Reconciler) Snapshot() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Entry, 0, len(r.frontends))
	for _, fs := range r.frontends {
		if fs.synced {
			out = append(out, fs.entry)
		}
	}
	slices.SortFunc(out, compareEntries)
	return out
}

// RevNatID returns the ID of a programmed frontend.
func (r *Reconciler) RevNatID(f Frontend) (uint16, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fs, ok := r.frontends[f]
	if !ok {
		return 0, false
	}
	return fs.info.RevNatID, true
}

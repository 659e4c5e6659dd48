package svid

import "sync"

// Static is a Source whose snapshot is set by hand (tests, fixed
// identities).
type Static struct {
	mu      sync.Mutex
	snap    Snapshot
	changed chan struct{}
}

// NewStatic returns a Static holding snap.
func NewStatic(snap Snapshot) *Static {
	return &Static{snap: snap, changed: make(chan struct{})}
}

// Set replaces the snapshot (its Version is set to the next one) and
// signals the change.
func (s *Static) Set(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap.Version = s.snap.Version + 1
	s.snap = snap
	close(s.changed)
	s.changed = make(chan struct{})
}

// Snapshot implements Source.
func (s *Static) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// Changed implements Source.
func (s *Static) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

package flow

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCapacity is the number of flows a node's store keeps by default
// (Hubble's default ring buffer size).
const DefaultCapacity = 4096

// DefaultFollowBuffer is a subscriber's default buffer: flows it may lag
// behind the writer before flows are dropped for it.
const DefaultFollowBuffer = 1024

// Store keeps the most recent flows in a ring and hands new ones to
// subscribers. Add is O(1) (plus one non-blocking send per subscriber) and
// never blocks on a reader; any number of goroutines may read and follow.
type Store struct {
	metrics *Metrics // nil: no metrics

	mu     sync.RWMutex
	ring   []Flow // ring[i%len(ring)] holds the i-th flow added
	next   uint64 // number of flows ever added
	subs   map[*Subscription]struct{}
	closed bool
}

// NewStore returns a store keeping the last capacity flows (DefaultCapacity
// when capacity < 1). m (may be nil) counts the flows added and the flows
// slow subscribers lost.
func NewStore(capacity int, m *Metrics) *Store {
	if capacity < 1 {
		capacity = DefaultCapacity
	}
	return &Store{metrics: m, ring: make([]Flow, capacity), subs: map[*Subscription]struct{}{}}
}

// Capacity is the number of flows the store keeps.
func (s *Store) Capacity() int { return len(s.ring) }

// Add stores f, evicting the oldest flow when full, and offers it to every
// subscriber whose filter it matches; a subscriber with a full buffer loses
// it (counted). The store keeps f: its slices must not be modified after.
func (s *Store) Add(f Flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Work on the stored copy: handing &f to the filters would move f to
	// the heap on every call.
	stored := &s.ring[s.next%uint64(len(s.ring))]
	*stored = f
	s.next++
	s.metrics.observe(stored)
	for sub := range s.subs {
		if sub.match != nil && !sub.match(stored) {
			continue
		}
		select {
		case sub.ch <- *stored:
		default:
			sub.dropped.Add(1)
			s.metrics.lost(LostSubscriber, 1)
		}
	}
}

// Len is the number of flows held.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.held()
}

func (s *Store) held() int { return int(min(s.next, uint64(len(s.ring)))) }

// at returns the i-th oldest held flow; callers hold mu.
func (s *Store) at(i int) *Flow {
	first := s.next - uint64(s.held())
	return &s.ring[(first+uint64(i))%uint64(len(s.ring))]
}

// Last returns the n most recently added flows that match (nil matches
// all), oldest first; n < 1 means all of them.
func (s *Store) Last(n int, match func(*Flow) bool) []Flow {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last(n, time.Time{}, match)
}

// Since returns the flows at or after t that match (nil matches all),
// oldest first.
func (s *Store) Since(t time.Time, match func(*Flow) bool) []Flow {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last(0, t, match)
}

// last collects, newest first, up to n (n < 1: all) matching flows not
// before since, and returns them oldest first. Callers hold mu.
func (s *Store) last(n int, since time.Time, match func(*Flow) bool) []Flow {
	var out []Flow
	for i := s.held() - 1; i >= 0 && (n < 1 || len(out) < n); i-- {
		f := s.at(i)
		if (since.IsZero() || !f.Time.Before(since)) && (match == nil || match(f)) {
			out = append(out, *f)
		}
	}
	slices.Reverse(out)
	return out
}

// FollowOptions shape a subscription.
type FollowOptions struct {
	// Match selects the flows the subscriber gets (nil: all). It runs on
	// the writer's goroutine, so it must be cheap and must not block;
	// Filter.Match is.
	Match func(*Flow) bool
	// Buffer is how many flows the subscriber may lag behind before new
	// ones are dropped for it (DefaultFollowBuffer when < 1).
	Buffer int
	// Last and Since select a backlog of stored flows (as Last and Since)
	// returned with the subscription: with neither, none. Nothing is lost
	// or repeated between the backlog and the first followed flow.
	Last  int
	Since time.Time
}

// Subscription receives the flows added after it started.
type Subscription struct {
	store   *Store
	ch      chan Flow
	match   func(*Flow) bool
	dropped atomic.Uint64
	stop    func() bool
}

// Follow subscribes to the flows added from now on, until ctx ends or
// Close. It returns the backlog opts asks for, oldest first.
func (s *Store) Follow(ctx context.Context, opts FollowOptions) ([]Flow, *Subscription) {
	if opts.Buffer < 1 {
		opts.Buffer = DefaultFollowBuffer
	}
	sub := &Subscription{store: s, ch: make(chan Flow, opts.Buffer), match: opts.Match}
	s.mu.Lock()
	var backlog []Flow
	if opts.Last > 0 || !opts.Since.IsZero() {
		backlog = s.last(opts.Last, opts.Since, opts.Match)
	}
	if s.closed {
		close(sub.ch)
	} else {
		s.subs[sub] = struct{}{}
		s.metrics.subscribers(len(s.subs))
	}
	s.mu.Unlock()
	sub.stop = context.AfterFunc(ctx, sub.unsubscribe)
	return backlog, sub
}

// Flows delivers the followed flows; it is closed when the subscription
// ends (its context, Close, or the store's Close).
func (sub *Subscription) Flows() <-chan Flow { return sub.ch }

// Dropped is the number of flows lost because the buffer was full.
func (sub *Subscription) Dropped() uint64 { return sub.dropped.Load() }

// Close ends the subscription; Flows is closed (after the flows still
// buffered). It may be called more than once.
func (sub *Subscription) Close() {
	sub.stop()
	sub.unsubscribe()
}

func (sub *Subscription) unsubscribe() {
	s := sub.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		close(sub.ch)
		s.metrics.subscribers(len(s.subs))
	}
}

// Close ends every subscription, present and future (the agent calls it
// when it shuts its API down, so following clients see the end). Flows can
// still be added and read.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for sub := range s.subs {
		delete(s.subs, sub)
		close(sub.ch)
	}
	s.metrics.subscribers(0)
}

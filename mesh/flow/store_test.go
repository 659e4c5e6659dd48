package flow

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// seqFlow is flow number i (its Bytes), i seconds after t0.
func seqFlow(i int) Flow {
	return Flow{Time: t0.Add(time.Duration(i) * time.Second), Type: TypeTrace, Verdict: Forwarded, Bytes: uint32(i), L4: L4{Protocol: TCP}}
}

func seqs(flows []Flow) []int {
	out := make([]int, len(flows))
	for i, f := range flows {
		out[i] = int(f.Bytes)
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func even(f *Flow) bool { return f.Bytes%2 == 0 }

func TestStoreRing(t *testing.T) {
	s := NewStore(4, nil)
	if got := s.Last(10, nil); len(got) != 0 {
		t.Fatalf("empty store: Last = %v", seqs(got))
	}
	for i := range 3 {
		s.Add(seqFlow(i))
	}
	if got := seqs(s.Last(0, nil)); !equalInts(got, []int{0, 1, 2}) {
		t.Errorf("before wrapping: Last(0) = %v", got)
	}
	for i := 3; i < 10; i++ {
		s.Add(seqFlow(i))
	}
	if s.Len() != 4 || s.Capacity() != 4 {
		t.Errorf("Len, Capacity = %d, %d; want 4, 4", s.Len(), s.Capacity())
	}
	for _, tc := range []struct {
		name string
		got  []Flow
		want []int
	}{
		{"Last(0): all held, oldest first", s.Last(0, nil), []int{6, 7, 8, 9}},
		{"Last(2)", s.Last(2, nil), []int{8, 9}},
		{"Last(100)", s.Last(100, nil), []int{6, 7, 8, 9}},
		{"Last(1, even): the last matching, not the last then filtered", s.Last(1, even), []int{8}},
		{"Last(0, even)", s.Last(0, even), []int{6, 8}},
		{"Since(8s)", s.Since(t0.Add(8*time.Second), nil), []int{8, 9}},
		{"Since(before all held)", s.Since(t0, nil), []int{6, 7, 8, 9}},
		{"Since(7s, even)", s.Since(t0.Add(7*time.Second), even), []int{8}},
		{"Since(future)", s.Since(t0.Add(time.Hour), nil), []int{}},
	} {
		if got := seqs(tc.got); !equalInts(got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if NewStore(0, nil).Capacity() != DefaultCapacity {
		t.Errorf("NewStore(0) capacity = %d, want %d", NewStore(0, nil).Capacity(), DefaultCapacity)
	}
}

func TestStoreFollowSlowSubscriber(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := NewStore(16, NewMetrics(reg))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, slow := s.Follow(ctx, FollowOptions{Buffer: 2})
	_, onlyEven := s.Follow(ctx, FollowOptions{Buffer: 100, Match: even})
	if got := metricValue(t, reg, "membrane_flow_subscribers"); got != 2 {
		t.Errorf("subscribers = %v, want 2", got)
	}

	// The slow subscriber never reads: the writer must not wait for it.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10 {
			s.Add(seqFlow(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Add blocked on a subscriber that does not read")
	}
	if got := slow.Dropped(); got != 8 {
		t.Errorf("slow subscriber dropped %d flows, want 8", got)
	}
	if got := onlyEven.Dropped(); got != 0 {
		t.Errorf("filtered subscriber dropped %d flows, want 0", got)
	}
	if got := metricValue(t, reg, `membrane_flow_lost_events_total{source="subscriber"}`); got != 8 {
		t.Errorf("lost subscriber events = %v, want 8", got)
	}

	cancel()
	if got := seqs(drain(t, slow)); !equalInts(got, []int{0, 1}) {
		t.Errorf("slow subscriber got %v, want the 2 flows its buffer held", got)
	}
	if got := seqs(drain(t, onlyEven)); !equalInts(got, []int{0, 2, 4, 6, 8}) {
		t.Errorf("filtered subscriber got %v", got)
	}
	waitFor(t, func() bool { return metricValue(t, reg, "membrane_flow_subscribers") == 0 }, "subscribers gauge back to 0")
}

// drain reads a subscription until it is closed.
func drain(t *testing.T, sub *Subscription) []Flow {
	t.Helper()
	var out []Flow
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-sub.Flows():
			if !ok {
				return out
			}
			out = append(out, f)
		case <-timeout:
			t.Fatal("subscription not closed")
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStoreFollowBacklog: the backlog and the followed flows join without a
// gap or a repeat while a writer keeps adding.
func TestStoreFollowBacklog(t *testing.T) {
	s := NewStore(64, nil)
	for i := range 10 {
		s.Add(seqFlow(i))
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const total = 5000
	wg.Go(func() {
		for i := 10; i < total; i++ {
			s.Add(seqFlow(i))
		}
	})
	backlog, sub := s.Follow(ctx, FollowOptions{Last: 5, Buffer: total})
	if len(backlog) != 5 {
		t.Fatalf("backlog of %d flows, want 5", len(backlog))
	}
	next := int(backlog[0].Bytes)
	for _, f := range backlog {
		if int(f.Bytes) != next {
			t.Fatalf("backlog %v not contiguous", seqs(backlog))
		}
		next++
	}
	for next < total {
		f := <-sub.Flows()
		if int(f.Bytes) != next {
			t.Fatalf("followed flow %d after %d: gap or repeat", f.Bytes, next-1)
		}
		next++
	}
	if sub.Dropped() != 0 {
		t.Errorf("dropped %d", sub.Dropped())
	}

	// Since selects the backlog too; with neither, there is none.
	if b, _ := s.Follow(ctx, FollowOptions{Since: t0.Add((total - 3) * time.Second)}); !equalInts(seqs(b), []int{total - 3, total - 2, total - 1}) {
		t.Errorf("Since backlog = %v", seqs(b))
	}
	if b, _ := s.Follow(ctx, FollowOptions{}); len(b) != 0 {
		t.Errorf("backlog without Last or Since: %v", seqs(b))
	}
}

func TestStoreCloseEndsSubscriptions(t *testing.T) {
	s := NewStore(8, nil)
	_, sub := s.Follow(t.Context(), FollowOptions{})
	s.Add(seqFlow(1))
	s.Close()
	if got := seqs(drain(t, sub)); !equalInts(got, []int{1}) {
		t.Errorf("got %v before the end, want [1]", got)
	}
	_, late := s.Follow(t.Context(), FollowOptions{})
	drain(t, late)
	s.Add(seqFlow(2)) // still stores
	if got := seqs(s.Last(0, nil)); !equalInts(got, []int{1, 2}) {
		t.Errorf("after Close: Last = %v", got)
	}
	sub.Close() // idempotent after the store's Close
	sub.Close()
}

func TestStoreSubscriptionClose(t *testing.T) {
	s := NewStore(8, nil)
	_, sub := s.Follow(t.Context(), FollowOptions{})
	sub.Close()
	drain(t, sub)
	s.Add(seqFlow(1)) // no send on the closed channel
}

// TestStoreConcurrent runs writers, readers and followers together; with
// -race it checks the locking.
func TestStoreConcurrent(t *testing.T) {
	s := NewStore(128, NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				s.Add(seqFlow(w*2000 + i))
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				s.Last(10, even)
				s.Since(t0.Add(time.Hour), nil)
				s.Len()
			}
		})
		wg.Go(func() {
			for ctx.Err() == nil {
				sctx, stop := context.WithCancel(ctx)
				_, sub := s.Follow(sctx, FollowOptions{Buffer: 8, Last: 3})
				for range 20 {
					select {
					case <-sub.Flows():
					case <-ctx.Done():
					}
				}
				stop()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	if s.Len() != 128 {
		t.Errorf("Len = %d, want 128", s.Len())
	}
}

func BenchmarkStoreAdd(b *testing.B) {
	s := NewStore(DefaultCapacity, NewMetrics(prometheus.NewRegistry()))
	_, sub := s.Follow(b.Context(), FollowOptions{Buffer: 1, Match: Filter{Verdict: []Verdict{Dropped}}.Match})
	defer sub.Close()
	f := seqFlow(1)
	for b.Loop() {
		s.Add(f)
	}
}

package node

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestThrottle checks that a change after a quiet spell is handled at once,
// that a burst right after it makes one more call, no sooner than the
// spacing after the first, and that nothing runs without a change.
func TestThrottle(t *testing.T) {
	const every = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var (
		mu    sync.Mutex
		calls []time.Time
	)
	called := make(chan struct{}, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		throttle(ctx, changed, every, func() {
			mu.Lock()
			calls = append(calls, time.Now())
			mu.Unlock()
			called <- struct{}{}
		})
	}()
	defer func() { cancel(); <-done }()

	start := time.Now()
	signal()
	<-called
	if d := time.Since(start); d > every/2 {
		t.Errorf("first change after a quiet spell handled after %s, want at once", d)
	}
	// A burst: one more call, once every has passed since the first.
	for range 20 {
		signal()
		time.Sleep(5 * time.Millisecond)
	}
	<-called
	select {
	case <-called:
		t.Fatal("a burst of changes made more than one call")
	case <-time.After(2 * every):
	}
	mu.Lock()
	gap := calls[1].Sub(calls[0])
	mu.Unlock()
	if gap < every {
		t.Errorf("second call %s after the first, want >= %s", gap, every)
	}
	// Quiet again: the next change is handled at once.
	start = time.Now()
	signal()
	<-called
	if d := time.Since(start); d > every/2 {
		t.Errorf("change after a quiet spell handled after %s, want at once", d)
	}
}

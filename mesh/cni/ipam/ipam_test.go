package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func newTestAllocator(t *testing.T, dir, cidr string) *Allocator {
	t.Helper()
	a, err := New(dir, netip.MustParsePrefix(cidr))
	if err != nil {
		t.Fatalf("New(%s): %v", cidr, err)
	}
	return a
}

func owner(i int) Owner {
	return Owner{ContainerID: fmt.Sprintf("container-%d", i), IfName: "eth0"}
}

func mustAllocate(t *testing.T, a *Allocator, o Owner) netip.Addr {
	t.Helper()
	ip, err := a.Allocate(context.Background(), o)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", o, err)
	}
	return ip
}

func TestNewRejectsUnusablePrefixes(t *testing.T) {
	for _, cidr := range []string{"fd00::/64", "10.0.0.0/31", "10.0.0.1/32"} {
		if _, err := New(t.TempDir(), netip.MustParsePrefix(cidr)); err == nil {
			t.Errorf("New(%s) = nil error, want error", cidr)
		}
	}
	if _, err := New("", netip.MustParsePrefix("10.0.0.0/24")); err == nil {
		t.Error("New with empty dir = nil error, want error")
	}
}

func TestAllocationOrderAndExhaustion(t *testing.T) {
	a := newTestAllocator(t, t.TempDir(), "10.0.0.0/29")
	if got := a.Size(); got != 5 {
		t.Fatalf("Size() = %d, want 5 (.2 to .6)", got)
	}
	for i, want := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"} {
		if got := mustAllocate(t, a, owner(i)); got.String() != want {
			t.Errorf("allocation %d = %s, want %s", i, got, want)
		}
	}
	_, err := a.Allocate(context.Background(), owner(99))
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("Allocate on full range: err = %v, want *ExhaustedError", err)
	}
	if want := "no free IP in 10.0.0.0/29 (5 addresses allocated)"; ex.Error() != want {
		t.Errorf("error = %q, want %q", ex.Error(), want)
	}
}

func TestUnmaskedPrefixIsMasked(t *testing.T) {
	a := newTestAllocator(t, t.TempDir(), "10.0.0.77/30")
	if got := mustAllocate(t, a, owner(1)); got.String() != "10.0.0.78" {
		t.Errorf("allocation = %s, want 10.0.0.78", got)
	}
	if got := a.Prefix().String(); got != "10.0.0.76/30" {
		t.Errorf("Prefix() = %s, want 10.0.0.76/30", got)
	}
}

func TestAllocateIsIdempotent(t *testing.T) {
	a := newTestAllocator(t, t.TempDir(), "10.0.0.0/24")
	first := mustAllocate(t, a, owner(1))
	mustAllocate(t, a, owner(2))
	if again := mustAllocate(t, a, owner(1)); again != first {
		t.Errorf("second Allocate for the same owner = %s, want %s", again, first)
	}
	other := Owner{ContainerID: owner(1).ContainerID, IfName: "net1"}
	if ip := mustAllocate(t, a, other); ip == first {
		t.Errorf("another interface of the same container got the same IP %s", ip)
	}
}

func TestReleaseIsRoundRobin(t *testing.T) {
	ctx := context.Background()
	a := newTestAllocator(t, t.TempDir(), "10.0.0.0/29")
	ipA := mustAllocate(t, a, owner(1))
	mustAllocate(t, a, owner(2))
	released, err := a.Release(ctx, owner(1))
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if len(released) != 1 || released[0] != ipA {
		t.Fatalf("Release = %v, want [%s]", released, ipA)
	}
	if got := mustAllocate(t, a, owner(3)); got.String() != "10.0.0.4" {
		t.Errorf("allocation after release = %s, want 10.0.0.4 (freed %s not reused at once)", got, ipA)
	}
	// Releasing again, or releasing an unknown owner, is fine.
	for _, o := range []Owner{owner(1), owner(42)} {
		if ips, err := a.Release(ctx, o); err != nil || len(ips) != 0 {
			t.Errorf("Release(%v) = %v, %v; want nothing, nil", o, ips, err)
		}
	}
	// Fill up the range; the wrap-around finds the freed address.
	mustAllocate(t, a, owner(4)) // .5
	mustAllocate(t, a, owner(5)) // .6
	if got := mustAllocate(t, a, owner(6)); got != ipA {
		t.Errorf("allocation after wrap-around = %s, want %s", got, ipA)
	}
}

func TestRestartKeepsAllocations(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := newTestAllocator(t, dir, "10.0.0.0/24")
	ip1 := mustAllocate(t, a, owner(1))
	ip2 := mustAllocate(t, a, owner(2))

	b := newTestAllocator(t, dir, "10.0.0.0/24")
	if got, ok, err := b.Lookup(ctx, owner(1)); err != nil || !ok || got != ip1 {
		t.Errorf("Lookup after restart = %s, %v, %v; want %s, true, nil", got, ok, err, ip1)
	}
	if got := mustAllocate(t, b, owner(2)); got != ip2 {
		t.Errorf("Allocate after restart for existing owner = %s, want %s", got, ip2)
	}
	ip3 := mustAllocate(t, b, owner(3))
	if ip3 == ip1 || ip3 == ip2 || ip3.String() != "10.0.0.4" {
		t.Errorf("new allocation after restart = %s, want 10.0.0.4", ip3)
	}
	all, err := b.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(all) != 3 {
		t.Errorf("List = %v, want 3 allocations", all)
	}
}

func TestFileLayout(t *testing.T) {
	dir := t.TempDir()
	a := newTestAllocator(t, dir, "10.0.0.0/24")
	ip := mustAllocate(t, a, Owner{ContainerID: "abc", IfName: "eth0"})
	data, err := os.ReadFile(filepath.Join(dir, ip.String()))
	if err != nil {
		t.Fatalf("read allocation file: %v", err)
	}
	if string(data) != "abc\neth0" {
		t.Errorf("allocation file = %q, want %q", data, "abc\neth0")
	}
	last, err := os.ReadFile(filepath.Join(dir, "last_reserved_ip"))
	if err != nil || string(last) != ip.String() {
		t.Errorf("last_reserved_ip = %q, %v; want %q", last, err, ip)
	}
}

func TestUnreadableFileStillHoldsItsAddress(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// A crash between create and write leaves an empty file.
	if err := os.WriteFile(filepath.Join(dir, "10.0.0.2"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a := newTestAllocator(t, dir, "10.0.0.0/24")
	if got := mustAllocate(t, a, owner(1)); got.String() != "10.0.0.3" {
		t.Errorf("allocation = %s, want 10.0.0.3 (10.0.0.2 is held by a broken file)", got)
	}
	freed, err := a.Prune(ctx, func(o Owner) bool { return o == owner(1) })
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if len(freed) != 1 || freed[0].IP.String() != "10.0.0.2" {
		t.Errorf("Prune freed %v, want only 10.0.0.2", freed)
	}
}

func TestInvalidOwner(t *testing.T) {
	a := newTestAllocator(t, t.TempDir(), "10.0.0.0/24")
	for _, o := range []Owner{{}, {ContainerID: "a"}, {ContainerID: "a\nb", IfName: "eth0"}} {
		if _, err := a.Allocate(context.Background(), o); err == nil {
			t.Errorf("Allocate(%q) = nil error, want error", o)
		}
		if _, err := a.Release(context.Background(), o); err == nil {
			t.Errorf("Release(%q) = nil error, want error", o)
		}
	}
}

func TestLockWaitHonoursContext(t *testing.T) {
	dir := t.TempDir()
	held, err := lockDir(context.Background(), dir)
	if err != nil {
		t.Fatalf("lockDir: %v", err)
	}
	defer held.unlock()
	a := newTestAllocator(t, dir, "10.0.0.0/24")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Allocate(ctx, owner(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Allocate while locked = %v, want deadline exceeded", err)
	}
}

func TestConcurrentGoroutinesGetDistinctIPs(t *testing.T) {
	dir := t.TempDir()
	const n = 29 // a /27 has exactly 29 allocatable addresses
	var wg sync.WaitGroup
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			// One Allocator per goroutine, as one per plugin process.
			a, err := New(dir, netip.MustParsePrefix("10.0.0.0/27"))
			if err == nil {
				ips[i], err = a.Allocate(context.Background(), owner(i))
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if j, dup := seen[ip]; dup {
			t.Errorf("goroutines %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
}

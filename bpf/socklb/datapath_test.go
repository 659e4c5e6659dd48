package socklb

import (
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"
)

func TestTCPConnect(t *testing.T) {
	e := newEnv(t, Options{})
	b1 := e.startTCPBackend("127.0.0.2", "b1")
	b2 := e.startTCPBackend("127.0.0.3", "b2")
	e.backend(1, b1, TCP)
	e.backend(2, b2, TCP)
	must(t, e.dp.UpsertService(Frontend{Addr: vip(), Port: 80, Proto: TCP}, ServiceInfo{RevNATID: 1}, []BackendID{1, 2}))

	const n = 64
	res := e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: n, Timeout: 2 * time.Second})
	seen := requireAllOK(t, res, vipAddr+":80")
	t.Logf("%d connects to %s:80 reached %v", n, vipAddr, seen)
	if seen["b1"] == 0 || seen["b2"] == 0 || seen["b1"]+seen["b2"] != n {
		t.Errorf("connects did not spread over both backends: %v", seen)
	}
	c := e.counters()
	if c.Translated < n || c.ReverseTranslated < n {
		t.Errorf("counters %+v: want >= %d translations and reverse translations", c, n)
	}

	// A destination that is not a service is left alone.
	res = e.runClient(t, childRequest{Mode: "tcp", Target: b1.String(), Count: 1, Timeout: 2 * time.Second})
	if seen := requireAllOK(t, res, b1.String()); seen["b1"] != 1 {
		t.Errorf("direct connect to %s: %v", b1, seen)
	}
	// Another port of the service address is not a service either.
	res = e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":81", Count: 1, Timeout: 300 * time.Millisecond})
	requireUnrouted(t, res, fmt.Sprintf("connect to %s:81 (no service)", vipAddr))
}

func TestUDP(t *testing.T) {
	e := newEnv(t, Options{})
	b1 := e.startUDPBackend("127.0.0.2", "b1")
	b2 := e.startUDPBackend("127.0.0.3", "b2")
	e.backend(1, b1, UDP)
	e.backend(2, b2, UDP)
	must(t, e.dp.UpsertService(Frontend{Addr: vip(), Port: 53, Proto: UDP}, ServiceInfo{RevNATID: 2}, []BackendID{1, 2}))

	t.Run("sendto/recvfrom", func(t *testing.T) {
		// Like a DNS client: the answer must come from the address asked.
		res := e.runClient(t, childRequest{Mode: "udp", Target: vipAddr + ":53", Count: 32, Timeout: 2 * time.Second})
		seen := requireAllOK(t, res, vipAddr+":53")
		t.Logf("32 queries to %s:53 answered by %v", vipAddr, seen)
		if seen["b1"] == 0 || seen["b2"] == 0 {
			t.Errorf("queries did not spread over both backends: %v", seen)
		}
	})
	t.Run("connected", func(t *testing.T) {
		res := e.runClient(t, childRequest{Mode: "udp-connected", Target: vipAddr + ":53", Count: 8, Timeout: 2 * time.Second})
		requireAllOK(t, res, vipAddr+":53")
	})
	if c := e.counters(); c.Translated < 40 || c.ReverseTranslated < 40 {
		t.Errorf("counters %+v: want >= 40 translations and reverse translations", c)
	}
}

func TestNoBackendsRefused(t *testing.T) {
	check := func(t *testing.T, opts Options, want syscall.Errno) {
		e := newEnv(t, opts)
		must(t, e.dp.UpsertService(Frontend{Addr: vip(), Port: 80, Proto: TCP}, ServiceInfo{RevNATID: 1}, nil))
		must(t, e.dp.UpsertService(Frontend{Addr: vip(), Port: 53, Proto: UDP}, ServiceInfo{RevNATID: 2}, nil))

		res := e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: 5, Timeout: 2 * time.Second})
		var slowest time.Duration
		for i, a := range res.Attempts {
			if syscall.Errno(a.Errno) != want {
				t.Fatalf("connect %d: %q (errno %d), want %v", i, a.Err, a.Errno, want)
			}
			if a.Elapsed >= 100*time.Millisecond {
				t.Errorf("connect %d took %s to fail, want well under 100ms", i, a.Elapsed)
			}
			slowest = max(slowest, a.Elapsed)
		}
		t.Logf("TCP connect to a service without backends: %v after at most %s", want, slowest)

		res = e.runClient(t, childRequest{Mode: "udp", Target: vipAddr + ":53", Count: 3, Timeout: 2 * time.Second})
		for i, a := range res.Attempts {
			if syscall.Errno(a.Errno) != want {
				t.Fatalf("sendto %d: %q (errno %d), want %v", i, a.Err, a.Errno, want)
			}
		}
		if c := e.counters(); c.NoBackend != 8 || c.Translated != 0 {
			t.Errorf("counters %+v: want 8 refusals and no translation", c)
		}
	}
	t.Run("set_retval", func(t *testing.T) { check(t, Options{}, syscall.ECONNREFUSED) })
	// Kernels before 5.18: the loader prunes the bpf_set_retval call.
	t.Run("without set_retval", func(t *testing.T) { check(t, Options{forceNoSetRetval: true}, syscall.EPERM) })
}

func TestAffinity(t *testing.T) {
	const n = 20
	setup := func(t *testing.T, opts Options) (*testEnv, Frontend) {
		e := newEnv(t, opts)
		for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
			e.backend(BackendID(i+1), e.startTCPBackend(ip, fmt.Sprintf("b%d", i+1)), TCP)
		}
		return e, Frontend{Addr: vip(), Port: 80, Proto: TCP}
	}
	connect := func(t *testing.T, e *testEnv, count int) map[string]int {
		t.Helper()
		res := e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: count, Timeout: 2 * time.Second})
		return requireAllOK(t, res, vipAddr+":80")
	}
	only := func(t *testing.T, seen map[string]int) string {
		t.Helper()
		if len(seen) != 1 {
			t.Fatalf("connects from one client netns spread over %v, want one backend", seen)
		}
		for b := range seen {
			return b
		}
		return ""
	}

	t.Run("sticky", func(t *testing.T) {
		e, fe := setup(t, Options{})
		info := ServiceInfo{RevNATID: 1, Flags: FlagAffinity, AffinityTimeout: time.Minute}
		must(t, e.dp.UpsertService(fe, info, []BackendID{1, 2, 3}))
		first := only(t, connect(t, e, n))
		if again := only(t, connect(t, e, n)); again != first {
			t.Fatalf("second client process went to %s, first to %s", again, first)
		}
		if c := e.counters(); c.AffinityHits != 2*n-1 {
			t.Errorf("affinity hits %d, want %d", c.AffinityHits, 2*n-1)
		}

		// The backend leaves the service: pick another, and stick to it.
		var rest []BackendID
		for id := BackendID(1); id <= 3; id++ {
			if fmt.Sprintf("b%d", id) != first {
				rest = append(rest, id)
			}
		}
		must(t, e.dp.UpsertService(fe, info, rest))
		next := only(t, connect(t, e, n))
		if next == first {
			t.Fatalf("still sent to %s after it left the service", first)
		}
		t.Logf("client stuck to %s, then to %s after %s left", first, next, first)

		// Affinity off for the service: spread again.
		must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: 1}, []BackendID{1, 2, 3}))
		if seen := connect(t, e, 3*n); len(seen) < 2 {
			t.Errorf("without FlagAffinity connects went only to %v", seen)
		}
	})

	t.Run("expires", func(t *testing.T) {
		e, fe := setup(t, Options{})
		must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: 1, Flags: FlagAffinity, AffinityTimeout: time.Second}, []BackendID{1, 2, 3}))
		connect(t, e, 2)
		if c := e.counters(); c.AffinityHits != 1 {
			t.Fatalf("affinity hits %d, want 1", c.AffinityHits)
		}
		time.Sleep(1500 * time.Millisecond)
		connect(t, e, 1)
		if c := e.counters(); c.AffinityHits != 1 {
			t.Errorf("affinity entry older than the 1s timeout was used (hits %d)", c.AffinityHits)
		}
	})

	t.Run("disabled by option", func(t *testing.T) {
		e, fe := setup(t, Options{DisableAffinity: true})
		must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: 1, Flags: FlagAffinity, AffinityTimeout: time.Minute}, []BackendID{1, 2, 3}))
		if seen := connect(t, e, 3*n); len(seen) < 2 {
			t.Errorf("with DisableAffinity connects went only to %v", seen)
		}
		if c := e.counters(); c.AffinityHits != 0 {
			t.Errorf("affinity hits %d with DisableAffinity", c.AffinityHits)
		}
	})
}

func TestUpdateAndDelete(t *testing.T) {
	e := newEnv(t, Options{})
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		e.backend(BackendID(i+1), e.startTCPBackend(ip, fmt.Sprintf("b%d", i+1)), TCP)
	}
	fe := Frontend{Addr: vip(), Port: 80, Proto: TCP}
	info := ServiceInfo{RevNATID: 9}
	connect := func(count int, timeout time.Duration) childResult {
		return e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: count, Timeout: timeout})
	}

	for _, step := range []struct {
		backends []BackendID
		want     []string
	}{
		{[]BackendID{1}, []string{"b1"}},
		{[]BackendID{2, 3}, []string{"b2", "b3"}},
		{[]BackendID{3, 1, 2}, []string{"b1", "b2", "b3"}},
		{[]BackendID{3}, []string{"b3"}},
	} {
		must(t, e.dp.UpsertService(fe, info, step.backends))
		seen := requireAllOK(t, connect(12*len(step.want), 2*time.Second), vipAddr+":80")
		for _, b := range step.want {
			if seen[b] == 0 {
				t.Errorf("backends %v: %s never chosen (%v)", step.backends, b, seen)
			}
		}
		if len(seen) != len(step.want) {
			t.Errorf("backends %v: reached %v, want only %v", step.backends, seen, step.want)
		}
		d, err := e.dp.Dump()
		must(t, err)
		want := []Service{{Frontend: fe, Info: info, Backends: step.backends}}
		if !reflect.DeepEqual(d.Services, want) {
			t.Errorf("dump after %v: %+v, want %+v", step.backends, d.Services, want)
		}
		if n := mapLen(t, e.dp.services); n != 1+len(step.backends) {
			t.Errorf("services map holds %d entries, want %d", n, 1+len(step.backends))
		}
	}

	must(t, e.dp.DeleteService(fe))
	requireUnrouted(t, connect(3, 300*time.Millisecond), "connect after delete")
	d, err := e.dp.Dump()
	must(t, err)
	if len(d.Services) != 0 || len(d.RevNAT) != 0 || mapLen(t, e.dp.services) != 0 {
		t.Errorf("after delete: services %v, rev-NAT %v", d.Services, d.RevNAT)
	}
	if len(d.Backends) != 3 {
		t.Errorf("backends %v: deleting a service must keep them", d.Backends)
	}
	must(t, e.dp.DeleteService(fe)) // idempotent
}

// TestUpdateUnderLoad changes the backend set while a client connects in a
// loop: the write order must never let a connect see a missing slot.
func TestUpdateUnderLoad(t *testing.T) {
	e := newEnv(t, Options{})
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		e.backend(BackendID(i+1), e.startTCPBackend(ip, fmt.Sprintf("b%d", i+1)), TCP)
	}
	fe := Frontend{Addr: vip(), Port: 80, Proto: TCP}
	sets := [][]BackendID{{1, 2, 3, 4}, {1}, {2, 3}, {4, 3, 2, 1}, {3}, {1, 4}}
	must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: 3}, sets[0]))

	lc := e.startLoopClient(t, vipAddr+":80")
	deadline := time.Now().Add(2 * time.Second)
	updates := 0
	for time.Now().Before(deadline) {
		must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: 3}, sets[updates%len(sets)]))
		updates++
	}
	res := lc.stop(t)
	c := e.counters()
	t.Logf("%d backend-set updates while %d connects succeeded; counters %+v", updates, res.OK, c)
	if res.Failed != 0 || res.OK == 0 {
		t.Errorf("%d connects failed (%d ok): %v", res.Failed, res.OK, res.Errors)
	}
	if c.SlotMissing != 0 || c.BackendMissing != 0 {
		t.Errorf("connects saw missing slots or backends: %+v", c)
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t, Options{})
	e.backend(1, e.startTCPBackend("127.0.0.2", "b1"), TCP)
	e.backend(2, e.startTCPBackend("127.0.0.3", "b2"), TCP)
	fe := Frontend{Addr: vip(), Port: 80, Proto: TCP}
	must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: 1}, []BackendID{1, 2}))
	before, err := e.dp.Dump()
	must(t, err)
	linksBefore, progsBefore := pinnedLinkIDs(t, e.pinDir)

	lc := e.startLoopClient(t, vipAddr+":80")
	const restarts = 5
	for range restarts {
		time.Sleep(100 * time.Millisecond)
		must(t, e.dp.Close())
		time.Sleep(50 * time.Millisecond) // no agent: only the pins hold the datapath
		e.dp = e.load()
	}
	time.Sleep(100 * time.Millisecond)
	res := lc.stop(t)
	t.Logf("%d restarts while the client connected: %d ok, %d failed", restarts, res.OK, res.Failed)
	if res.Failed != 0 || res.OK == 0 {
		t.Errorf("%d connects failed across restarts (%d ok): %v", res.Failed, res.OK, res.Errors)
	}

	after, err := e.dp.Dump()
	must(t, err)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("entries changed across restarts:\nbefore %+v\nafter  %+v", before, after)
	}
	linksAfter, progsAfter := pinnedLinkIDs(t, e.pinDir)
	if !reflect.DeepEqual(linksBefore, linksAfter) {
		t.Errorf("links were re-created (%v -> %v), want programs replaced in place", linksBefore, linksAfter)
	}
	for i := range progsBefore {
		if progsBefore[i] == progsAfter[i] {
			t.Errorf("link %d still runs program %d after reload", linksAfter[i], progsAfter[i])
		}
	}
	if n := attachedPrograms(t, e.cgroup); n != len(hooks()) {
		t.Errorf("%d programs attached to the cgroup, want %d", n, len(hooks()))
	}

	// Unload: pins gone, programs detached, VIP no longer translated.
	must(t, e.dp.Close())
	must(t, Unload(e.pinDir))
	if _, err := os.Stat(e.pinDir); !os.IsNotExist(err) {
		t.Errorf("pin dir still there after Unload: %v", err)
	}
	if n := attachedPrograms(t, e.cgroup); n != 0 {
		t.Errorf("%d programs still attached after Unload", n)
	}
	out := e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: 1, Timeout: 300 * time.Millisecond})
	requireUnrouted(t, out, "connect after Unload")
	must(t, Unload(e.pinDir)) // idempotent
}

// TestMoveCgroup loads the same pin directory for another cgroup: the links
// move, the entries stay.
func TestMoveCgroup(t *testing.T) {
	e := newEnv(t, Options{})
	e.backend(1, e.startTCPBackend("127.0.0.2", "b1"), TCP)
	must(t, e.dp.UpsertService(Frontend{Addr: vip(), Port: 80, Proto: TCP}, ServiceInfo{RevNATID: 1}, []BackendID{1}))
	must(t, e.dp.Close())

	old := e.cgroup
	e.cgroup = newCgroup(t)
	e.opts.CgroupPath = e.cgroup
	e.dp = e.load()
	if n := attachedPrograms(t, old); n != 0 {
		t.Errorf("%d programs left on the old cgroup", n)
	}
	res := e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: 3, Timeout: 2 * time.Second})
	requireAllOK(t, res, vipAddr+":80")
}

func TestTenThousandServices(t *testing.T) {
	e := newEnv(t, Options{})
	const services = 10000
	start := time.Now()
	for i := range services {
		b1, b2 := BackendID(2*i+1), BackendID(2*i+2)
		e.backend(b1, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 8080), TCP)
		e.backend(b2, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)}), 8080), TCP)
		fe := Frontend{Addr: netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), Port: 80, Proto: TCP}
		must(t, e.dp.UpsertService(fe, ServiceInfo{RevNATID: uint16(i + 1)}, []BackendID{b1, b2}))
	}
	t.Logf("programmed %d services x 2 backends (+%d backends) in %s", services, 2*services, time.Since(start))

	e.backend(100001, e.startTCPBackend("127.0.0.2", "b1"), TCP)
	e.backend(100002, e.startTCPBackend("127.0.0.3", "b2"), TCP)
	fe := Frontend{Addr: vip(), Port: 80, Proto: TCP}
	info := ServiceInfo{RevNATID: services + 1}
	start = time.Now()
	must(t, e.dp.UpsertService(fe, info, []BackendID{100001, 100002}))
	t.Logf("one more UpsertService on top of %d services took %s", services, time.Since(start))
	start = time.Now()
	must(t, e.dp.UpsertService(fe, info, []BackendID{100001, 100002}))
	t.Logf("re-upserting it unchanged took %s", time.Since(start))

	seen := requireAllOK(t, e.runClient(t, childRequest{Mode: "tcp", Target: vipAddr + ":80", Count: 16, Timeout: 2 * time.Second}), vipAddr+":80")
	t.Logf("16 connects reached %v", seen)

	start = time.Now()
	d, err := e.dp.Dump()
	must(t, err)
	t.Logf("Dump of %d services and %d backends took %s", len(d.Services), len(d.Backends), time.Since(start))
	if len(d.Services) != services+1 || len(d.Backends) != 2*services+2 || len(d.RevNAT) != services+1 {
		t.Errorf("dump holds %d services, %d backends, %d rev-NAT entries", len(d.Services), len(d.Backends), len(d.RevNAT))
	}
}

package socklb

import (
	"bufio"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/membrane-mesh/membrane/bpf/internal/bpftest"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// vipAddr is a service address nothing answers on. The test netns has no
// route to it, so only a translated connect gets anywhere.
const vipAddr = "10.96.7.7"

func vip() netip.Addr { return netip.MustParseAddr(vipAddr) }

// testEnv is one loaded datapath on a fresh cgroup and pin directory, with
// a fresh network namespace (only lo, no default route) that every socket
// of the test, backend or client, lives in.
type testEnv struct {
	tb     testing.TB
	netns  string
	cgroup string
	pinDir string
	opts   Options
	dp     *Datapath
}

func newEnv(tb testing.TB, opts Options) *testEnv {
	tb.Helper()
	requireSupported(tb)
	e := &testEnv{tb: tb, netns: bpftest.Netns(tb), cgroup: bpftest.Cgroup(tb), pinDir: bpftest.PinDir(tb)}
	opts.PinDir, opts.CgroupPath = e.pinDir, e.cgroup
	e.opts = opts
	e.dp = e.load()
	return e
}

func (e *testEnv) load() *Datapath {
	e.tb.Helper()
	dp, err := Load(e.tb.Context(), testLogger(e.tb), e.opts)
	if err != nil {
		e.tb.Fatal(err)
	}
	e.tb.Cleanup(func() { _ = dp.Close() })
	return dp
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// requireSupported skips only when the kernel lacks a feature.
func requireSupported(tb testing.TB) {
	tb.Helper()
	bpftest.RequireSupported(tb, Supported)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func (e *testEnv) counters() Counters {
	e.tb.Helper()
	c, err := e.dp.Counters()
	must(e.tb, err)
	return c
}

// inNetns runs fn in the env's network namespace.
func (e *testEnv) inNetns(fn func() error) {
	e.tb.Helper()
	if err := netns.Do(e.netns, fn); err != nil {
		e.tb.Fatal(err)
	}
}

// startTCPBackend listens on ip:<random port> in the test netns and greets
// every connection with its name.
func (e *testEnv) startTCPBackend(ip, name string) netip.AddrPort {
	tb := e.tb
	tb.Helper()
	var ln net.Listener
	e.inNetns(func() (err error) {
		ln, err = net.Listen("tcp4", ip+":0")
		return err
	})
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				w := bufio.NewWriter(c)
				_, _ = w.WriteString(name + "\n")
				_ = w.Flush()
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// startUDPBackend listens on ip:<random port> in the test netns and
// answers every datagram with its name.
func (e *testEnv) startUDPBackend(ip, name string) netip.AddrPort {
	tb := e.tb
	tb.Helper()
	var pc net.PacketConn
	e.inNetns(func() (err error) {
		pc, err = net.ListenPacket("udp4", ip+":0")
		return err
	})
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name), from)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func (e *testEnv) backend(id BackendID, ap netip.AddrPort, proto Proto) {
	e.tb.Helper()
	must(e.tb, e.dp.UpsertBackend(id, Backend{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}))
}

// requireAllOK checks every attempt succeeded and saw peer, and counts the
// backends that answered.
func requireAllOK(t *testing.T, res childResult, peer string) map[string]int {
	t.Helper()
	if len(res.Attempts) == 0 {
		t.Fatal("client made no attempts")
	}
	seen := map[string]int{}
	for i, a := range res.Attempts {
		if a.Err != "" {
			t.Fatalf("attempt %d failed after %s: %s", i, a.Elapsed, a.Err)
		}
		if a.Peer != peer {
			t.Fatalf("attempt %d: peer %s, want %s (backend %s)", i, a.Peer, peer, a.Backend)
		}
		seen[a.Backend]++
	}
	return seen
}

// requireUnrouted checks that every attempt failed at once for want of a
// route: the datapath left the destination alone, and the test netns, with
// no route but loopback's, kept the packet from going anywhere.
func requireUnrouted(t *testing.T, res childResult, what string) {
	t.Helper()
	if len(res.Attempts) == 0 {
		t.Fatalf("%s: client made no attempts", what)
	}
	for i, a := range res.Attempts {
		switch errno := syscall.Errno(a.Errno); {
		case a.Err == "":
			t.Errorf("%s: attempt %d reached %s", what, i, a.Backend)
		case errno != syscall.ENETUNREACH && errno != syscall.EHOSTUNREACH:
			t.Errorf("%s: attempt %d: %q (errno %d), want ENETUNREACH", what, i, a.Err, a.Errno)
		case a.Elapsed >= 100*time.Millisecond:
			t.Errorf("%s: attempt %d took %s to fail, want well under 100ms", what, i, a.Elapsed)
		}
	}
}

// attachedPrograms counts the programs attached to the cgroup at each hook.
func attachedPrograms(tb testing.TB, cgroupPath string) int {
	tb.Helper()
	f, err := os.Open(cgroupPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	n := 0
	for _, h := range hooks() {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: h.attach})
		if err != nil {
			tb.Fatalf("query %s programs: %v", h.section, err)
		}
		n += len(res.Programs)
	}
	return n
}

// pinnedLinkIDs returns the IDs of the pinned links and of their programs.
func pinnedLinkIDs(tb testing.TB, pinDir string) (links []link.ID, progs []ebpf.ProgramID) {
	tb.Helper()
	for _, h := range hooks() {
		l, err := link.LoadPinnedLink(filepath.Join(linkDir(pinDir), h.prog), nil)
		if err != nil {
			tb.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			tb.Fatal(err)
		}
		links, progs = append(links, info.ID), append(progs, info.Program)
	}
	return links, progs
}

func newCgroup(tb testing.TB) string { return bpftest.Cgroup(tb) }

// mapLen counts a map's entries.
func mapLen(tb testing.TB, m *ebpf.Map) int {
	tb.Helper()
	var (
		n   int
		key = make([]byte, m.KeySize())
		val = make([]byte, m.ValueSize())
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		n++
	}
	if err := it.Err(); err != nil {
		tb.Fatal(err)
	}
	return n
}

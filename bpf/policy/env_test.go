package policy

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/membrane-mesh/membrane/bpf/internal/bpftest"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// Return codes of the programs (tcx's).
const (
	retNext = 0xffffffff // TCX_NEXT: allowed, on to the next program
	retDrop = 2          // TCX_DROP
	// TCX_REDIRECT: bpf_redirect's TC_ACT_REDIRECT, to the L7 proxy.
	// BPF_PROG_RUN returns it without redirecting anything.
	retRedirect = 7
)

// testEnv is one loaded datapath on a fresh pin directory, in a fresh
// network namespace where BPF_PROG_RUN runs and dummy interfaces stand in
// for host-side veths.
type testEnv struct {
	tb     testing.TB
	netns  string
	pinDir string
	opts   Options
	dp     *Datapath
}

// Small maps: every test loads its own (the conntrack LRU is preallocated).
func smallMaps(o Options) Options {
	if o.MaxConntrack == 0 {
		o.MaxConntrack = 4096
	}
	if o.MaxIPCache == 0 {
		o.MaxIPCache = 4096
	}
	if o.MaxPolicy == 0 {
		o.MaxPolicy = 65536
	}
	if o.MaxEndpoints == 0 {
		o.MaxEndpoints = 1024
	}
	return o
}

func newEnv(tb testing.TB, opts Options) *testEnv {
	tb.Helper()
	requireSupported(tb)
	e := &testEnv{tb: tb, netns: bpftest.Netns(tb), pinDir: bpftest.PinDir(tb)}
	opts.PinDir = e.pinDir
	e.opts = smallMaps(opts)
	tb.Cleanup(func() {
		// In the test netns: Unload looks for clsact filters there.
		if err := netns.Do(e.netns, func() error { return Unload(e.pinDir) }); err != nil {
			tb.Errorf("unload: %v", err)
		}
	})
	e.dp = e.load()
	return e
}

func (e *testEnv) load() *Datapath {
	e.tb.Helper()
	var dp *Datapath
	e.in(func() (err error) {
		dp, err = Load(e.tb.Context(), testLogger(e.tb), e.opts)
		return err
	})
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

func requireTCX(tb testing.TB) {
	tb.Helper()
	ok, err := haveTCX()
	if err != nil {
		tb.Fatal(err)
	}
	if !ok {
		testenv.Missing(tb, "kernel lacks tcx (Linux 6.6+)")
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// in runs fn in the env's network namespace.
func (e *testEnv) in(fn func() error) {
	e.tb.Helper()
	if err := netns.Do(e.netns, fn); err != nil {
		e.tb.Fatal(err)
	}
}

// veth adds a veth pair name <-> name+"p" (both up) to the env's netns and
// returns name's ifindex: a stand-in host-side veth for BPF_PROG_RUN and
// attach tests (this kernel has veth, not necessarily dummy).
func (e *testEnv) veth(name string) int {
	e.tb.Helper()
	var idx int
	e.in(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
			return err
		}
		for _, n := range []string{name, name + "p"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if n == name {
				idx = l.Attrs().Index
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	return idx
}

// skbCtx is the head of struct __sk_buff, as BPF_PROG_RUN takes it: the
// kernel accepts mark, priority, ingress_ifindex, ifindex and cb here and
// wants the rest zero.
type skbCtx struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTci        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	TcIndex        uint32
	Cb             [5]uint32
}

// runResult is what one BPF_PROG_RUN returned.
type runResult struct {
	ret  uint32
	mark uint32
	data []byte // the frame as the program left it
}

func (r runResult) passed() bool     { return r.ret == retNext }
func (r runResult) dropped() bool    { return r.ret == retDrop }
func (r runResult) redirected() bool { return r.ret == retRedirect }

// run runs the program of direction dir (relative to the pod) on frame as
// if it arrived on ifindex, in the env's netns.
func (e *testEnv) run(dir Direction, ifindex int, frame []byte) runResult {
	e.tb.Helper()
	return e.runMarked(dir, ifindex, 0, frame)
}

// runMarked is run with skb->mark set to mark.
func (e *testEnv) runMarked(dir Direction, ifindex int, mark uint32, frame []byte) runResult {
	e.tb.Helper()
	prog := e.dp.progs.PolicyToPod
	if dir == Egress {
		prog = e.dp.progs.PolicyFromPod
	}
	var res runResult
	e.in(func() error {
		in := skbCtx{Mark: mark, Ifindex: uint32(ifindex)}
		// The kernel copies all of struct __sk_buff out (ENOSPC if it
		// does not fit); mark is at offset 8.
		out := make([]byte, 512)
		opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256), Context: in, ContextOut: out}
		ret, err := prog.Run(opts)
		res = runResult{ret: ret, mark: binary.NativeEndian.Uint32(out[8:]), data: opts.DataOut}
		return err
	})
	return res
}

// events opens the ring buffer; close with the env.
func (e *testEnv) events() *EventReader {
	e.tb.Helper()
	r, err := e.dp.Events()
	must(e.tb, err)
	e.tb.Cleanup(func() { _ = r.Close() })
	return r
}

// drain reads the events already in the ring buffer.
func drain(tb testing.TB, r *EventReader) []FlowEvent {
	tb.Helper()
	var out []FlowEvent
	for {
		r.SetDeadline(time.Now().Add(20 * time.Millisecond))
		ev, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		must(tb, err)
		out = append(out, ev)
	}
}

func (e *testEnv) counters() Counters {
	e.tb.Helper()
	c, err := e.dp.Counters()
	must(e.tb, err)
	return c
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// openNetns is a vishvananda handle on a netns path (for netlink handles).
func openNetns(tb testing.TB, path string) vnetns.NsHandle {
	tb.Helper()
	h, err := vnetns.GetFromPath(path)
	must(tb, err)
	tb.Cleanup(func() { h.Close() })
	return h
}

func requireHostRouting(tb testing.TB) {
	tb.Helper()
	ok, err := HaveHostRouting()
	if err != nil {
		tb.Fatal(err)
	}
	if !ok {
		testenv.Missing(tb, "kernel lacks bpf_redirect_peer (Linux 5.10+)")
	}
}

package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// TCP_RR over one veth: the knobs.
const (
	rrPort         = 12865           // netperf's
	rrRoundsPerArm = 5               // rounds per arm and b.Loop iteration; the median counts
	rrRoundTime    = 2 * time.Second // each round runs this long...
	rrRoundMax     = 20_000_000      // ...or this many transactions, whichever comes first
	rrWarmup       = 300 * time.Millisecond
	rrIOTimeout    = 5 * time.Second // SO_RCVTIMEO/SO_SNDTIMEO: no call blocks longer
	rrServerMax    = 200_000_000     // transactions the server answers before it gives up...
	rrServerLife   = 5 * time.Minute // ...and how long it serves at most
	rrEINTRRetries = 100
)

// rrRound is one timed round of one arm.
type rrRound struct {
	enforced bool
	n        int
	elapsed  time.Duration
	packets  uint64 // the programs forwarded, both directions
}

func (r rrRound) perSec() float64 { return float64(r.n) / r.elapsed.Seconds() }
func (r rrRound) meanUS() float64 { return float64(r.elapsed.Nanoseconds()) / 1e3 / float64(r.n) }

// BenchmarkTCPRREnforcedVeth measures what policy enforcement costs a
// packet on a real veth: TCP_RR (1-byte request, 1-byte response, TCP_NODELAY,
// one established connection, like netperf TCP_RR) from a "pod" namespace to
// a server in the "node" namespace that holds the host-side veth, with the
// policy programs attached there and the endpoint enforcing ingress and
// egress (an egress rule allows the server; replies ride conntrack), and
// the same veth with no program. Rounds of the two arms alternate
// (plain, enforced, enforced, plain, ...) and the medians are reported.
// Every enforced round must show up in the forwarded counters of both
// directions, and every plain round must not.
func BenchmarkTCPRREnforcedVeth(b *testing.B) {
	e := newEnv(b, Options{})
	nodeAddr := netip.MustParseAddr("192.168.77.1")
	e.in(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("node lo: %w", err)
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: netlink.NewIPNet(net.IP(nodeAddr.AsSlice()))})
	})
	pod := addPod(b, e, "mbrrr", "10.244.1.11")
	const podID = Identity(1001)
	dp := e.dp
	must(b, dp.UpsertIPCache(prefix("0.0.0.0/0"), IdentityWorld))
	must(b, dp.UpsertIPCache(netip.PrefixFrom(nodeAddr, 32), IdentityHost))
	must(b, dp.UpsertIPCache(netip.PrefixFrom(pod.addr, 32), podID))
	must(b, dp.SetEndpointPolicy(1, []Rule{{
		Key: PolicyKey{Direction: Egress, RemoteIdentity: IdentityHost, Proto: TCP, Port: rrPort}, Entry: PolicyEntry{Verdict: Allow},
	}}))
	must(b, dp.UpsertEndpoint(pod.ifindex, Endpoint{ID: 1, Identity: podID, Addr: pod.addr, EnforceIngress: true, EnforceEgress: true}))

	// Client and server threads share one CPU: every transaction runs the
	// whole path serially on it, with no cross-CPU wakeups (whose cost
	// depends on where the scheduler happens to put the threads) to
	// drown the difference between the arms.
	cpu, err := rrCPU()
	must(b, err)

	// The server: its listening socket is created in the node netns (a
	// socket stays in the netns it was created in, whatever thread uses
	// it). The benchmark owns the listener; the server goroutine owns the
	// accepted connection and its thread, which it never unlocks: the
	// thread, pinned to cpu, ends with the goroutine.
	var lfd int
	e.in(func() (err error) {
		lfd, err = rrListen(netip.AddrPortFrom(nodeAddr, rrPort))
		return err
	})
	served := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, err := pinCPU(cpu); err != nil {
			served <- err
			return
		}
		served <- rrServe(lfd)
	}()
	cfd := -1
	b.Cleanup(func() {
		if cfd >= 0 {
			_ = unix.Close(cfd) // the server reads EOF
		}
		_ = unix.Shutdown(lfd, unix.SHUT_RDWR) // wakes an accept still waiting
		select {
		case err := <-served:
			// Without a client the server only reports its accept woken.
			if err != nil && cfd >= 0 {
				b.Errorf("TCP_RR server: %v", err)
			}
		case <-time.After(2 * rrIOTimeout):
			b.Errorf("TCP_RR server did not stop within %s", 2*rrIOTimeout)
		}
		_ = unix.Close(lfd)
	})

	// Connect with the programs attached, so conntrack sees the handshake
	// and the established flow is what the enforced rounds exercise.
	e.attach(dp, pod.ifindex)
	attached := true
	must(b, netns.Do(pod.netns, func() (err error) {
		cfd, err = rrDial(netip.AddrPortFrom(nodeAddr, rrPort))
		return err
	}))
	setArm := func(enforced bool) {
		switch {
		case enforced && !attached:
			e.attach(dp, pod.ifindex)
		case !enforced && attached:
			e.detach(dp, pod.ifindex)
		}
		attached = enforced
	}

	// The client socket belongs to the pod's netns since its creation;
	// the client side runs on this goroutine, locked to its thread (pinned
	// to cpu while it runs) so the blocking calls ping-pong between two
	// fixed threads like netperf's.
	runtime.LockOSThread()
	restore, err := pinCPU(cpu)
	if err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	defer func() {
		if err := restore(); err != nil {
			b.Errorf("TCP_RR client thread: %v", err) // stays locked: it ends with this goroutine
			return
		}
		runtime.UnlockOSThread()
	}()
	if _, err := rrRun(cfd, rrWarmup, rrRoundMax); err != nil {
		b.Fatalf("TCP_RR warm-up: %v", err)
	}
	var rounds []rrRound
	for b.Loop() {
		for i := range rrRoundsPerArm {
			// ABBA order: drift over time hits both arms alike.
			for _, enforced := range [][2]bool{{false, true}, {true, false}}[i%2] {
				setArm(enforced)
				before := e.counters()
				r, err := rrRun(cfd, rrRoundTime, rrRoundMax)
				if err != nil {
					b.Fatalf("TCP_RR round (enforced %t): %v", enforced, err)
				}
				r.enforced = enforced
				r.packets = checkRRCounters(b, r, before, e.counters())
				rounds = append(rounds, r)
			}
		}
	}
	setArm(false)

	enf, plain := rrSummarize(rounds, true), rrSummarize(rounds, false)
	mode := "tcx"
	if dp.legacy {
		mode = "clsact"
	}
	// The summary first: go test keeps only the first lines of a
	// benchmark's log.
	b.Logf("TCP_RR enforced %.0f/s plain %.0f/s ratio %.3f (mean latency enforced %.2f µs plain %.2f µs, %+.2f µs per transaction; %s; median of %d rounds each)",
		enf.perSec, plain.perSec, enf.perSec/plain.perSec, enf.meanUS, plain.meanUS, enf.meanUS-plain.meanUS, mode, len(rounds)/2)
	b.Logf("fastest rounds: enforced %.2f µs plain %.2f µs (%+.2f µs); client and server threads on CPU %d",
		enf.bestUS, plain.bestUS, enf.bestUS-plain.bestUS, cpu)
	var seq strings.Builder
	for _, r := range rounds {
		arm := "plain"
		if r.enforced {
			arm = "enforced"
		}
		fmt.Fprintf(&seq, " %s %.2f µs (%d, %.2f pkts/rr through the programs);", arm, r.meanUS(), r.n, float64(r.packets)/float64(r.n))
	}
	b.Logf("rounds in order:%s", seq.String())
	b.ReportMetric(0, "ns/op") // one op is a whole series of rounds: meaningless
	b.ReportMetric(enf.perSec, "rr/s-enforced")
	b.ReportMetric(plain.perSec, "rr/s-plain")
	b.ReportMetric(enf.perSec/plain.perSec, "ratio")
	b.ReportMetric(enf.meanUS, "µs/rr-enforced")
	b.ReportMetric(plain.meanUS, "µs/rr-plain")
	summary.Record(b, summary.Row{Figure: "TCP_RR over a veth, policy enforced", Value: enf.perSec, Unit: "transactions/s",
		Peer: "the same veth, no program", PeerValue: plain.perSec, Met: summary.NoTarget,
		Note: fmt.Sprintf("%+.2f µs per transaction", enf.meanUS-plain.meanUS)}.WithRatio())
}

// checkRRCounters fails the benchmark unless an enforced round's packets
// (one request from the pod and one response to it per transaction, at
// least) went through the programs and were forwarded, and a plain round's
// did not reach them at all. It returns the packets forwarded.
func checkRRCounters(b *testing.B, r rrRound, before, after Counters) uint64 {
	b.Helper()
	egress := after.Egress.Forwarded.Packets - before.Egress.Forwarded.Packets
	ingress := after.Ingress.Forwarded.Packets - before.Ingress.Forwarded.Packets
	var dropped uint64
	for _, dir := range []Direction{Ingress, Egress} {
		for reason, c := range after.Direction(dir).Dropped {
			dropped += c.Packets - before.Direction(dir).Dropped[reason].Packets
		}
	}
	switch {
	case dropped != 0:
		b.Fatalf("TCP_RR round (enforced %t): %d packets dropped: %+v", r.enforced, dropped, after)
	case r.enforced && (egress < uint64(r.n) || ingress < uint64(r.n)):
		b.Fatalf("enforced TCP_RR round of %d transactions: forwarded egress %d ingress %d packets: the programs were not in the path",
			r.n, egress, ingress)
	case !r.enforced && egress+ingress != 0:
		b.Fatalf("plain TCP_RR round: forwarded egress %d ingress %d packets: the programs were still in the path", egress, ingress)
	}
	return egress + ingress
}

// rrSummary is one arm: the median rate and mean latency of its rounds,
// and the latency of its fastest round (other load on the machine only
// ever slows a round down).
type rrSummary struct{ perSec, meanUS, bestUS float64 }

func rrSummarize(rounds []rrRound, enforced bool) rrSummary {
	var rates, lats []float64
	for _, r := range rounds {
		if r.enforced == enforced {
			rates = append(rates, r.perSec())
			lats = append(lats, r.meanUS())
		}
	}
	s := rrSummary{perSec: median(rates), meanUS: median(lats)}
	if len(lats) > 0 {
		s.bestUS = slices.Min(lats)
	}
	return s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// rrRun does transactions on fd for d or max transactions, whichever ends
// first.
func rrRun(fd int, d time.Duration, maxN int) (rrRound, error) {
	buf := []byte{'r'}
	start := time.Now()
	deadline := start.Add(d)
	n := 0
	for n < maxN && (n%64 != 0 || time.Now().Before(deadline)) {
		if err := rrWrite(fd, buf); err != nil {
			return rrRound{}, fmt.Errorf("transaction %d: send: %w", n, err)
		}
		if err := rrRead(fd, buf); err != nil {
			return rrRound{}, fmt.Errorf("transaction %d: receive: %w", n, err)
		}
		n++
	}
	return rrRound{n: n, elapsed: time.Since(start)}, nil
}

// rrServe accepts one connection on lfd and answers every byte with a
// byte until the client closes it, for at most rrServerMax transactions
// and rrServerLife.
func rrServe(lfd int) error {
	var fd int
	if err := eintr(func() (err error) {
		fd, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		return err
	}); err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer unix.Close(fd)
	if err := rrSockopts(fd); err != nil {
		return err
	}
	buf := []byte{0}
	deadline := time.Now().Add(rrServerLife)
	for n := 0; ; n++ {
		if n >= rrServerMax || (n%1024 == 0 && time.Now().After(deadline)) {
			return fmt.Errorf("gave up after %d transactions (limits %d, %s)", n, rrServerMax, rrServerLife)
		}
		if err := rrRead(fd, buf); errors.Is(err, errRREOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("transaction %d: receive: %w", n, err)
		}
		if err := rrWrite(fd, buf); err != nil {
			return fmt.Errorf("transaction %d: send: %w", n, err)
		}
	}
}

var errRREOF = errors.New("connection closed by the peer")

// rrRead reads exactly len(buf) (one) byte.
func rrRead(fd int, buf []byte) error {
	var m int
	err := eintr(func() (err error) {
		m, err = unix.Read(fd, buf)
		return err
	})
	switch {
	case err != nil:
		return err
	case m == 0:
		return errRREOF
	case m != len(buf):
		return fmt.Errorf("read %d bytes, want %d", m, len(buf))
	}
	return nil
}

func rrWrite(fd int, buf []byte) error {
	var m int
	err := eintr(func() (err error) {
		m, err = unix.Write(fd, buf)
		return err
	})
	if err == nil && m != len(buf) {
		err = fmt.Errorf("wrote %d bytes, want %d", m, len(buf))
	}
	return err
}

// eintr retries fn while a signal interrupts it: with SO_RCVTIMEO or
// SO_SNDTIMEO set, the kernel does not restart socket calls itself.
func eintr(fn func() error) error {
	var err error
	for range rrEINTRRetries {
		if err = fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
	return err
}

// rrCPU is the last CPU this process may run on.
func rrCPU() (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return -1, fmt.Errorf("CPU affinity: %w", err)
	}
	const cpuSetSize = 1024 // CPU_SETSIZE, the bits of a unix.CPUSet
	for cpu := cpuSetSize - 1; cpu >= 0; cpu-- {
		if set.IsSet(cpu) {
			return cpu, nil
		}
	}
	return -1, errors.New("CPU affinity: no CPU allowed")
}

// pinCPU restricts the calling thread, which must be locked, to cpu. The
// returned func restores its affinity.
func pinCPU(cpu int) (restore func() error, err error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("pin thread to CPU %d: %w", cpu, err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin thread to CPU %d: %w", cpu, err)
	}
	return func() error {
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			return fmt.Errorf("restore CPU affinity: %w", err)
		}
		return nil
	}, nil
}

// rrListen listens on addr in the calling thread's netns (blocking socket).
func rrListen(addr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("listen on %s: socket: %w", addr, err)
	}
	err = errors.Join(
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
		rrSockopts(fd),
		unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}),
		unix.Listen(fd, 1),
	)
	if err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return fd, nil
}

// rrDial connects to addr from the calling thread's netns (blocking socket).
func rrDial(addr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("connect to %s: socket: %w", addr, err)
	}
	if err := rrSockopts(fd); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("connect to %s: %w", addr, err)
	}
	// Not retried on EINTR: a connect in progress cannot be restarted.
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return fd, nil
}

// rrSockopts: no Nagle, and no call blocks longer than rrIOTimeout.
func rrSockopts(fd int) error {
	tv := unix.NsecToTimeval(rrIOTimeout.Nanoseconds())
	err := errors.Join(
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv),
	)
	if err != nil {
		return fmt.Errorf("socket options: %w", err)
	}
	return nil
}

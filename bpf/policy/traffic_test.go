package policy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/bpf/internal/bpftest"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// TestTraffic runs real TCP between two "pods" (network namespaces) wired
// to a "node" namespace like Membrane's CNI does (pod IP/32, default via
// 169.254.1.1 with a permanent neighbor entry for the host veth's MAC,
// podIP/32 dev mbrX on the node, forwarding on), with the policy programs on
// both host-side veths. Every packet stays inside the test's namespaces.
func TestTraffic(t *testing.T) {
	t.Run("tcx", func(t *testing.T) {
		requireSupported(t)
		requireTCX(t)
		testTraffic(t, Options{})
	})
	t.Run("clsact", func(t *testing.T) { testTraffic(t, Options{forceLegacyTC: true}) })
	t.Run("host-routing", func(t *testing.T) {
		requireSupported(t)
		requireTCX(t)
		requireHostRouting(t)
		testTraffic(t, Options{HostRouting: true})
	})
}

type testPod struct {
	netns   string
	addr    netip.Addr
	ifindex int // host side, in the node netns
	route   LocalRoute
}

func addPod(t testing.TB, e *testEnv, host, addr string) testPod {
	t.Helper()
	p := testPod{netns: bpftest.Netns(t), addr: netip.MustParseAddr(addr)}
	podNS, err := ns.GetNS(p.netns)
	must(t, err)
	defer podNS.Close()
	e.in(func() error {
		pair, err := veth.Setup(t.Context(), veth.Config{HostIfName: host, PodIfName: "eth0", PodNS: podNS, IP: p.addr, MTU: 1500})
		p.ifindex = pair.Host.Index
		p.route = LocalRoute{Ifindex: pair.Host.Index, PodMAC: pair.Pod.MAC, HostMAC: pair.Host.MAC}
		return err
	})
	return p
}

// serve accepts TCP connections on port in the pod and echoes lines back.
func (p testPod) serve(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	must(t, netns.Do(p.netns, func() (err error) {
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from the pod; the socket lives in the pod's netns.
func (p testPod) dial(to netip.Addr, port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(p.netns, func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(to, uint16(port)).String(), timeout)
		return err
	})
	return c, err
}

func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return errors.New("echo mismatch: " + line)
	}
	return nil
}

// waitEvent reads events until match returns true (up to 5s).
func waitEvent(t *testing.T, r *EventReader, what string, match func(FlowEvent) bool) FlowEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var seen []FlowEvent
	for time.Now().Before(deadline) {
		r.SetDeadline(deadline)
		ev, err := r.Read()
		if err != nil {
			break
		}
		if match(ev) {
			return ev
		}
		seen = append(seen, ev)
	}
	t.Fatalf("no event for %s; saw %v", what, seen)
	return FlowEvent{}
}

func testTraffic(t *testing.T, opts Options) {
	e := newEnv(t, opts)
	// Real nodes have an address; the node's ARP requests to pods carry it.
	e.in(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: netlink.NewIPNet(net.IPv4(192, 168, 77, 1))})
	})
	a := addPod(t, e, "mbra", "10.244.1.11")
	b := addPod(t, e, "mbrb", "10.244.1.22")
	const open, closed, idA, idB = 8080, 9090, Identity(1001), Identity(1002)
	b.serve(t, open)
	b.serve(t, closed)
	a.serve(t, open)

	dp := e.dp
	must(t, dp.UpsertIPCache(prefix("0.0.0.0/0"), IdentityWorld))
	must(t, dp.UpsertIPCache(prefix("192.168.77.1/32"), IdentityHost))
	must(t, dp.UpsertIPCache(netip.PrefixFrom(a.addr, 32), idA))
	must(t, dp.UpsertIPCache(netip.PrefixFrom(b.addr, 32), idB))
	must(t, dp.SetEndpointPolicy(1, []Rule{{
		Key: PolicyKey{Direction: Egress, RemoteIdentity: idB, Proto: TCP}, Entry: PolicyEntry{Verdict: Allow},
	}}))
	must(t, dp.SetEndpointPolicy(2, []Rule{{
		Key: PolicyKey{Direction: Ingress, RemoteIdentity: idA, Proto: TCP, Port: open}, Entry: PolicyEntry{Verdict: Allow},
	}}))
	must(t, dp.UpsertEndpoint(a.ifindex, Endpoint{ID: 1, Identity: idA, Addr: a.addr, EnforceIngress: true, EnforceEgress: true}))
	must(t, dp.UpsertEndpoint(b.ifindex, Endpoint{ID: 2, Identity: idB, Addr: b.addr, EnforceIngress: true, EnforceEgress: true}))
	if opts.HostRouting {
		must(t, dp.UpsertLocalRoute(a.addr, a.route))
		must(t, dp.UpsertLocalRoute(b.addr, b.route))
	}
	e.attach(dp, a.ifindex)
	e.attach(dp, b.ifindex)
	events := e.events()

	// Allowed: A's egress and B's ingress allow it; replies ride conntrack.
	conn, err := a.dial(b.addr, open, 2*time.Second)
	if err != nil {
		t.Fatalf("allowed connect A -> B:%d: %v", open, err)
	}
	defer conn.Close()
	must(t, echo(conn, "hello"))
	waitEvent(t, events, "B's ingress trace of the allowed SYN", func(ev FlowEvent) bool {
		return ev.Verdict == Forwarded && ev.Direction == Ingress && ev.EndpointID == 2 && ev.CTState == CTNew &&
			ev.Dst.Port() == open && ev.SrcIdentity == idA && ev.Match == MatchL3L4 && ev.TCPFlags == SYN
	})

	// Denied by B's ingress policy: the SYN never arrives, the connect times out.
	start := time.Now()
	if c, err := a.dial(b.addr, closed, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("connect A -> B:%d succeeded, want denied", closed)
	} else if !isTimeout(err) {
		t.Fatalf("connect A -> B:%d: %v, want a timeout", closed, err)
	}
	t.Logf("denied connect gave up after %s", time.Since(start).Round(time.Millisecond))
	ev := waitEvent(t, events, "B's drop of the denied SYN", func(ev FlowEvent) bool {
		return ev.Verdict == Dropped && ev.Dst.Port() == closed
	})
	t.Logf("drop event: %s", ev)
	if ev.DropReason != DropPolicyDenied || ev.DropReason.String() != "Policy denied" || ev.Direction != Ingress ||
		ev.EndpointID != 2 || ev.Ifindex != b.ifindex || ev.SrcIdentity != idA || ev.DstIdentity != idB ||
		ev.Src.Addr() != a.addr || ev.Dst.Addr() != b.addr || ev.Proto != TCP || ev.TCPFlags != SYN {
		t.Errorf("drop event %+v", ev)
	}

	// B's egress allows nothing: B cannot connect to A.
	if c, err := b.dial(a.addr, open, 500*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("connect B -> A succeeded, want denied by B's egress policy")
	}
	waitEvent(t, events, "B's egress drop", func(ev FlowEvent) bool {
		return ev.Verdict == Dropped && ev.Direction == Egress && ev.EndpointID == 2 && ev.DropReason == DropPolicyDenied
	})

	// Deny A at B: new connections fail, and so does the open one, whose
	// next packet meets the new policy.
	must(t, dp.SetEndpointPolicy(2, []Rule{{
		Key: PolicyKey{Direction: Ingress, RemoteIdentity: idA}, Entry: PolicyEntry{Verdict: Deny},
	}}))
	must(t, dp.Revise())
	if c, err := a.dial(b.addr, open, 500*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("new connect after the deny succeeded")
	}
	waitEvent(t, events, "denylist drop", func(ev FlowEvent) bool {
		return ev.Verdict == Dropped && ev.DropReason == DropPolicyDenyList && ev.EndpointID == 2
	})
	if err := echo(conn, "after the deny"); !isTimeout(err) {
		t.Errorf("established connection after the deny: %v, want its packets dropped (a timeout)", err)
	}
	waitEvent(t, events, "the open connection's drop", func(ev FlowEvent) bool {
		return ev.Verdict == Dropped && ev.DropReason == DropPolicyDenyList && ev.EndpointID == 2 && ev.CTState == CTEstablished
	})

	c, err := dp.Counters()
	must(t, err)
	t.Logf("counters: ingress %+v, egress %+v, ct created %d, host routed %d", c.Ingress, c.Egress, c.CTCreated, c.HostRouted)
	if routed := c.HostRouted != 0; routed != opts.HostRouting {
		t.Errorf("%d packets host routed, want some: %t", c.HostRouted, opts.HostRouting)
	}
	if c.Ingress.Dropped[DropPolicyDenied].Packets == 0 || c.Egress.Dropped[DropPolicyDenied].Packets == 0 ||
		c.Ingress.Forwarded.Packets == 0 || c.Egress.Forwarded.Packets == 0 {
		t.Errorf("counters %+v", c)
	}

	// Without the programs on B's interface, only A's egress policy applies
	// (the agent removes the local route with the endpoint).
	if opts.HostRouting {
		must(t, dp.DeleteLocalRoute(b.addr))
	}
	e.detach(dp, b.ifindex)
	c2, err := a.dial(b.addr, closed, 2*time.Second)
	if err != nil {
		t.Fatalf("connect to B:%d after detaching B: %v", closed, err)
	}
	must(t, echo(c2, "detached"))
	c2.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

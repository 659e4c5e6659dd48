package policy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// uplink is a veth standing for the node's uplink, with hostMAC (the
// frames' destination) as its address, so BPF_PROG_RUN sees frames to it
// as addressed to this host.
func (e *testEnv) uplink(name string) int {
	e.tb.Helper()
	idx := e.veth(name)
	e.in(func() error {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, hostMAC)
	})
	return idx
}

// runUplink runs policy_from_uplink on frame as if it arrived on ifindex.
func (e *testEnv) runUplink(ifindex int, mark uint32, frame []byte) runResult {
	e.tb.Helper()
	var res runResult
	e.in(func() error {
		out := make([]byte, 512)
		opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256),
			Context: skbCtx{Mark: mark, Ifindex: uint32(ifindex)}, ContextOut: out}
		ret, err := e.dp.progs.PolicyFromUplink.Run(opts)
		res = runResult{ret: ret, mark: binary.NativeEndian.Uint32(out[8:]), data: opts.DataOut}
		return err
	})
	return res
}

// TestHostRoutingFromUplink runs policy_from_uplink on packets from a pod of
// another node (peer 2, in the ipcache, no local route) to the fixture's
// endpoint, which has a local route: the destination's ingress policy
// decides on the destination's ifindex, with the frame as the node's router
// would have forwarded it, and what host routing does not take passes to
// the stack untouched.
func TestHostRoutingFromUplink(t *testing.T) {
	requireHostRouting(t)
	f := newFixture(t, Options{HostRouting: true}, Endpoint{})
	const proxyPort = 15001
	up := f.uplink("up0")
	route := LocalRoute{
		Ifindex: f.ifindex,
		PodMAC:  net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1},
		HostMAC: net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2},
	}
	must(t, f.dp.UpsertLocalRoute(netip.MustParseAddr(podAddr), route))
	in := func(port uint16) PolicyKey {
		return PolicyKey{Direction: Ingress, RemoteIdentity: peerID(2), Proto: TCP, Port: port}
	}
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: in(80), Entry: PolicyEntry{Verdict: Allow}},
		{Key: in(82), Entry: PolicyEntry{Verdict: Redirect, ProxyPort: proxyPort}},
	}))
	routed := func(frame []byte) []byte { return routedFrame(frame, route) }
	fromRemote := func(port uint16) pkt {
		return pkt{src: netip.MustParseAddr(peer(2)), dst: netip.MustParseAddr(podAddr), proto: TCP, sport: f.nextPort(), dport: port, flags: SYN}
	}

	// Allowed: into the pod, MACs and TTL as the router would have.
	before := f.counters()
	p := fromRemote(80)
	r := f.runUplink(up, 0, p.frame())
	evs := drain(t, f.ev)
	if !r.redirected() || r.mark != 0 || !bytes.Equal(r.data, routed(p.frame())) {
		t.Errorf("allowed: returned %d, mark %#x, frame\n %x\nwant redirect, no mark, frame\n %x", int32(r.ret), r.mark, r.data, routed(p.frame()))
	}
	if len(evs) != 1 || evs[0].Direction != Ingress || evs[0].Verdict != Forwarded || evs[0].Ifindex != f.ifindex || evs[0].EndpointID != epID ||
		evs[0].SrcIdentity != peerID(2) || evs[0].DstIdentity != epIdentity || evs[0].CTState != CTNew {
		t.Errorf("allowed: events %v, want one new ingress forwarded on ifindex %d, endpoint %d", evs, f.ifindex, epID)
	}
	after := f.counters()
	if after.HostRouted != before.HostRouted+1 || after.UplinkRouted != before.UplinkRouted+1 ||
		after.Ingress.Forwarded.Packets != before.Ingress.Forwarded.Packets+1 {
		t.Errorf("allowed: host routed %d -> %d, from uplink %d -> %d, ingress forwarded %d -> %d; want +1 each",
			before.HostRouted, after.HostRouted, before.UplinkRouted, after.UplinkRouted,
			before.Ingress.Forwarded.Packets, after.Ingress.Forwarded.Packets)
	}
	// The flow's next packet: on conntrack, routed again, no new event.
	next := p
	next.flags = ACK
	if r := f.runUplink(up, 0, next.frame()); !r.redirected() {
		t.Errorf("established: returned %d, want redirect", int32(r.ret))
	}
	if evs := drain(t, f.ev); len(evs) != 0 {
		t.Errorf("established: events %v, want none", evs)
	}

	// Denied by the destination's ingress policy: dropped, reported on its interface.
	before = f.counters()
	p = fromRemote(81)
	r = f.runUplink(up, 0, p.frame())
	evs = drain(t, f.ev)
	if !r.dropped() {
		t.Errorf("denied: returned %d, want drop", int32(r.ret))
	}
	if len(evs) != 1 || evs[0].Verdict != Dropped || evs[0].DropReason != DropPolicyDenied || evs[0].Ifindex != f.ifindex ||
		evs[0].Direction != Ingress || evs[0].EndpointID != epID || evs[0].SrcIdentity != peerID(2) || evs[0].Dst.Port() != 81 {
		t.Errorf("denied: events %v, want one ingress policy drop on ifindex %d, endpoint %d", evs, f.ifindex, epID)
	}
	after = f.counters()
	if after.HostRouted != before.HostRouted || after.UplinkRouted != before.UplinkRouted ||
		after.Ingress.Dropped[DropPolicyDenied].Packets != before.Ingress.Dropped[DropPolicyDenied].Packets+1 {
		t.Errorf("denied: host routed %d -> %d, from uplink %d -> %d, ingress policy drops %+v -> %+v", before.HostRouted, after.HostRouted,
			before.UplinkRouted, after.UplinkRouted, before.Ingress.Dropped[DropPolicyDenied], after.Ingress.Dropped[DropPolicyDenied])
	}

	// L7 redirect: hairpinned through the destination's host veth to the proxy.
	before = f.counters()
	p = fromRemote(82)
	r = f.runUplink(up, 0, p.frame())
	evs = drain(t, f.ev)
	if want := swappedMACs(routed(p.frame())); !r.redirected() || r.mark != ToProxyMark(proxyPort) || !bytes.Equal(r.data, want) {
		t.Errorf("L7: returned %d, mark %#x, frame\n %x\nwant redirect, mark %#x, frame\n %x", int32(r.ret), r.mark, r.data, ToProxyMark(proxyPort), want)
	}
	if len(evs) != 1 || evs[0].Verdict != Redirected || evs[0].ProxyPort != proxyPort || evs[0].Ifindex != f.ifindex {
		t.Errorf("L7: events %v, want one redirect to %d on ifindex %d", evs, proxyPort, f.ifindex)
	}
	if after := f.counters(); after.UplinkRouted != before.UplinkRouted {
		t.Errorf("L7: from uplink %d -> %d, want unchanged", before.UplinkRouted, after.UplinkRouted)
	}

	// Everything else passes to the node's stack, frame untouched, no event.
	untouched := func(what string, mark uint32, frame []byte) {
		t.Helper()
		before := f.counters()
		r := f.runUplink(up, mark, frame)
		if !r.passed() || !bytes.Equal(r.data[:len(frame)], frame) {
			t.Errorf("%s: returned %d, frame changed %t; want pass, untouched", what, int32(r.ret), !bytes.Equal(r.data[:len(frame)], frame))
		}
		if evs := drain(t, f.ev); len(evs) != 0 {
			t.Errorf("%s: events %v, want none", what, evs)
		}
		after := f.counters()
		if after.HostRouted != before.HostRouted || after.UplinkRouted != before.UplinkRouted || after.Ingress.Forwarded != before.Ingress.Forwarded {
			t.Errorf("%s: counted (host routed %d -> %d, from uplink %d -> %d)", what, before.HostRouted, after.HostRouted, before.UplinkRouted, after.UplinkRouted)
		}
	}
	withTTL := func(p pkt, ttl uint8) []byte {
		b := p.frame()
		b[14+8] = ttl
		binary.BigEndian.PutUint16(b[14+10:], 0)
		binary.BigEndian.PutUint16(b[14+10:], checksum(b[14:34]))
		return b
	}
	untouched("not a local pod", 0, pkt{src: netip.MustParseAddr(peer(2)), dst: netip.MustParseAddr(peer(3)), proto: TCP, sport: f.nextPort(), dport: 80, flags: SYN}.frame())
	// The node's own address: WireGuard's encrypted UDP, the proxies' tunnels.
	untouched("to the node (WireGuard)", 0, pkt{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.1.3"), proto: UDP, sport: 51871, dport: 51871}.frame())
	otherHost := fromRemote(80).frame()
	copy(otherHost[0:6], []byte{0x02, 0xcc, 0, 0, 0, 9})
	untouched("to another host's MAC", 0, otherHost)
	untouched("TTL 1", 0, withTTL(fromRemote(80), 1))
	frag := fromRemote(80)
	frag.moreFrags = true
	untouched("first fragment", 0, frag.frame())
	frag.moreFrags, frag.fragOffset = false, 8
	untouched("later fragment", 0, frag.frame())
	untouched("marked", MarkMagicFromProxy, fromRemote(80).frame())
	ipv6 := fromRemote(80).frame()
	binary.BigEndian.PutUint16(ipv6[12:], 0x86dd)
	untouched("not IPv4", 0, ipv6)
	var ln net.Listener
	f.testEnv.in(func() (err error) {
		ln, err = net.Listen("tcp4", "0.0.0.0:9999")
		return err
	})
	untouched("to a node socket", 0, fromRemote(9999).frame())
	ln.Close()
	if r := f.runUplink(up, 0, fromRemote(9999).frame()); !r.dropped() {
		t.Errorf("without the node socket: returned %d, want the destination's policy drop", int32(r.ret))
	}
	drain(t, f.ev)

	// Host routing off: the program passes everything, and SetUplinks refuses.
	g := newFixture(t, Options{}, Endpoint{})
	gup := g.uplink("up0")
	must(t, g.dp.UpsertLocalRoute(netip.MustParseAddr(podAddr), route))
	must(t, g.dp.SetEndpointPolicy(epID, []Rule{{Key: in(80), Entry: PolicyEntry{Verdict: Allow}}}))
	p = fromRemote(80)
	if r := g.runUplink(gup, 0, p.frame()); !r.passed() || !bytes.Equal(r.data[:len(p.frame())], p.frame()) {
		t.Errorf("host routing off: returned %d, want pass with the frame untouched", int32(r.ret))
	}
	if evs := drain(t, g.ev); len(evs) != 0 {
		t.Errorf("host routing off: events %v, want none", evs)
	}
	var err error
	g.testEnv.in(func() error { err = g.dp.SetUplinks([]int{gup}); return nil })
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("SetUplinks with host routing off: %v, want ErrNotSupported", err)
	}
	if in, _ := g.tcxPrograms(gup); len(in) != 0 {
		t.Errorf("host routing off: uplink programs %v, want none", in)
	}
}

func (e *testEnv) setUplinks(dp *Datapath, ifindexes ...int) {
	e.tb.Helper()
	e.in(func() error { return dp.SetUplinks(ifindexes) })
}

// TestUplinkAttach: SetUplinks attaches policy_from_uplink at tcx ingress
// through pinned links, after programs already there; a restart swaps the
// program in place; a Load with host routing off, SetUplinks without the
// interface and Cleanup take it away. Pod interfaces (Attached) never
// include an uplink.
func TestUplinkAttach(t *testing.T) {
	requireTCX(t)
	requireHostRouting(t)
	e := newEnv(t, Options{HostRouting: true})
	up, up2, pod := e.uplink("up0"), e.uplink("up1"), e.veth("mbr0")
	e.attach(e.dp, pod)

	// A program already on the uplink (a firewall) goes first.
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}, // TCX_NEXT
	})
	must(t, err)
	defer other.Close()
	var ol link.Link
	e.in(func() (err error) {
		ol, err = link.AttachTCX(link.TCXOptions{Interface: up, Program: other, Attach: ebpf.AttachTCXIngress})
		return err
	})
	defer ol.Close()

	e.setUplinks(e.dp, up, up2)
	e.setUplinks(e.dp, up, up2) // again: nothing changes
	uplinkProg := progID(t, e.dp.progs.PolicyFromUplink)
	if in, eg := e.tcxPrograms(up); !slices.Equal(in, []ebpf.ProgramID{progID(t, other), uplinkProg}) || len(eg) != 0 {
		t.Errorf("uplink tcx ingress %v egress %v, want [%d %d] []", in, eg, progID(t, other), uplinkProg)
	}
	got, err := e.dp.Uplinks()
	must(t, err)
	if !slices.Equal(got, []int{up, up2}) {
		t.Errorf("Uplinks() %v, want [%d %d]", got, up, up2)
	}
	attached, err := e.dp.Attached()
	must(t, err)
	if !slices.Equal(attached, []int{pod}) {
		t.Errorf("Attached() %v, want [%d] (no uplinks)", attached, pod)
	}
	l, err := link.LoadPinnedLink(linkPin(e.pinDir, up, uplinkHook()), nil)
	must(t, err)
	info, err := l.Info()
	l.Close()
	must(t, err)
	linkID := info.ID

	// A restart swaps the new program into the same link.
	dp2 := e.load()
	if in, _ := e.tcxPrograms(up); !slices.Equal(in, []ebpf.ProgramID{progID(t, other), progID(t, dp2.progs.PolicyFromUplink)}) {
		t.Errorf("after restart: uplink ingress %v, want the new program last", in)
	}
	l, err = link.LoadPinnedLink(linkPin(e.pinDir, up, uplinkHook()), nil)
	must(t, err)
	info, err = l.Info()
	l.Close()
	must(t, err)
	if info.ID != linkID {
		t.Errorf("after restart: link %d, want %d (updated in place)", info.ID, linkID)
	}

	// One uplink fewer: detached from it.
	e.setUplinks(dp2, up)
	if in, _ := e.tcxPrograms(up2); len(in) != 0 {
		t.Errorf("after dropping an uplink: its programs %v, want none", in)
	}
	if got, _ := dp2.Uplinks(); !slices.Equal(got, []int{up}) {
		t.Errorf("Uplinks() %v, want [%d]", got, up)
	}

	// A Load with host routing off detaches the uplinks, not the pods.
	off := *e
	off.opts.HostRouting = false
	dp3 := off.load()
	if in, _ := e.tcxPrograms(up); !slices.Equal(in, []ebpf.ProgramID{progID(t, other)}) {
		t.Errorf("host routing off: uplink ingress %v, want only the other program", in)
	}
	if _, err := os.Stat(linkPin(e.pinDir, up, uplinkHook())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host routing off: uplink pin still there: %v", err)
	}
	if in, _ := e.tcxPrograms(pod); !slices.Equal(in, []ebpf.ProgramID{progID(t, dp3.progs.PolicyFromPod)}) {
		t.Errorf("host routing off: pod ingress %v", in)
	}

	// Cleanup removes uplink links with the rest.
	dp4 := e.load()
	e.setUplinks(dp4, up)
	must(t, dp4.Close())
	e.in(func() error { return Unload(e.pinDir) })
	if in, _ := e.tcxPrograms(up); !slices.Equal(in, []ebpf.ProgramID{progID(t, other)}) {
		t.Errorf("after Unload: uplink ingress %v, want only the other program", in)
	}
}

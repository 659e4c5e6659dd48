package policy

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// TestHostRouting runs policy_from_pod on packets from a local pod (peer 1,
// on its own veth, enforcing nothing) to the fixture's endpoint, which has
// a local route: after the source's egress verdict, the destination's
// ingress policy decides on the destination's ifindex, with the frame as
// the node's router would have forwarded it. BPF_PROG_RUN returns
// bpf_redirect_peer's verdict without delivering; TestTraffic's
// host-routing case delivers for real.
func TestHostRouting(t *testing.T) {
	requireHostRouting(t)
	f := newFixture(t, Options{HostRouting: true}, Endpoint{})
	const proxyPort = 15001
	srcIfindex := f.veth("mbr1")
	must(t, f.dp.UpsertEndpoint(srcIfindex, Endpoint{ID: 8, Identity: peerID(1), Addr: netip.MustParseAddr(peer(1))}))
	route := LocalRoute{
		Ifindex: f.ifindex,
		PodMAC:  net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1},
		HostMAC: net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2},
	}
	must(t, f.dp.UpsertLocalRoute(netip.MustParseAddr(podAddr), route))
	in := func(port uint16) PolicyKey {
		return PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: port}
	}
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: in(80), Entry: PolicyEntry{Verdict: Allow}},
		{Key: in(82), Entry: PolicyEntry{Verdict: Redirect, ProxyPort: proxyPort}},
	}))
	// routed is frame as the router forwards it to the pod.
	routed := func(frame []byte) []byte { return routedFrame(frame, route) }
	fromPod := func(port uint16) pkt {
		return pkt{src: netip.MustParseAddr(peer(1)), dst: netip.MustParseAddr(podAddr), proto: TCP, sport: f.nextPort(), dport: port, flags: SYN}
	}
	ingress := func(evs []FlowEvent) []FlowEvent {
		var out []FlowEvent
		for _, ev := range evs {
			if ev.Direction == Ingress {
				out = append(out, ev)
			}
		}
		return out
	}

	// The kernel empties a program array once no file descriptor holds it:
	// the Datapath keeps one, whatever the garbage collector does.
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	runtime.GC()

	// Allowed: into the pod, MACs and TTL as the router would have.
	before := f.counters()
	p := fromPod(80)
	r := f.run(Egress, srcIfindex, p.frame())
	evs := drain(t, f.ev)
	if !r.redirected() || r.mark != 0 || !bytes.Equal(r.data, routed(p.frame())) {
		t.Errorf("allowed: returned %d, mark %#x, frame\n %x\nwant redirect, no mark, frame\n %x", int32(r.ret), r.mark, r.data, routed(p.frame()))
	}
	if ev := ingress(evs); len(ev) != 1 || ev[0].Verdict != Forwarded || ev[0].Ifindex != f.ifindex || ev[0].EndpointID != epID ||
		ev[0].SrcIdentity != peerID(1) || ev[0].DstIdentity != epIdentity || ev[0].CTState != CTNew {
		t.Errorf("allowed: ingress events %v, want one new forwarded on ifindex %d, endpoint %d", ev, f.ifindex, epID)
	}
	after := f.counters()
	if after.HostRouted != before.HostRouted+1 || after.Ingress.Forwarded.Packets != before.Ingress.Forwarded.Packets+1 {
		t.Errorf("allowed: host routed %d -> %d, ingress forwarded %d -> %d; want +1 each",
			before.HostRouted, after.HostRouted, before.Ingress.Forwarded.Packets, after.Ingress.Forwarded.Packets)
	}
	// Its reply comes back the same way, on conntrack.
	reply := p.reverse(SYN | ACK)
	reply.src, reply.dst = p.dst, p.src
	must(t, f.dp.UpsertLocalRoute(netip.MustParseAddr(peer(1)), LocalRoute{Ifindex: srcIfindex, PodMAC: route.PodMAC, HostMAC: route.HostMAC}))
	if r := f.run(Egress, f.ifindex, reply.frame()); !r.redirected() {
		t.Errorf("reply: returned %d, want redirect to the peer", int32(r.ret))
	}
	drain(t, f.ev)

	// Denied by the destination's ingress policy: dropped, reported on its interface.
	before = f.counters()
	p = fromPod(81)
	r = f.run(Egress, srcIfindex, p.frame())
	evs = ingress(drain(t, f.ev))
	if !r.dropped() {
		t.Errorf("denied: returned %d, want drop", int32(r.ret))
	}
	if len(evs) != 1 || evs[0].Verdict != Dropped || evs[0].DropReason != DropPolicyDenied || evs[0].Ifindex != f.ifindex ||
		evs[0].EndpointID != epID || evs[0].Dst.Port() != 81 {
		t.Errorf("denied: ingress events %v, want one policy drop on ifindex %d, endpoint %d", evs, f.ifindex, epID)
	}
	after = f.counters()
	if after.HostRouted != before.HostRouted || after.Ingress.Dropped[DropPolicyDenied].Packets != before.Ingress.Dropped[DropPolicyDenied].Packets+1 {
		t.Errorf("denied: host routed %d -> %d, ingress policy drops %+v -> %+v", before.HostRouted, after.HostRouted,
			before.Ingress.Dropped[DropPolicyDenied], after.Ingress.Dropped[DropPolicyDenied])
	}

	// L7 redirect: hairpinned through the destination's host veth, as policy_to_pod does.
	before = f.counters()
	p = fromPod(82)
	r = f.run(Egress, srcIfindex, p.frame())
	evs = ingress(drain(t, f.ev))
	if want := swappedMACs(routed(p.frame())); !r.redirected() || r.mark != ToProxyMark(proxyPort) || !bytes.Equal(r.data, want) {
		t.Errorf("L7: returned %d, mark %#x, frame\n %x\nwant redirect, mark %#x, frame\n %x", int32(r.ret), r.mark, r.data, ToProxyMark(proxyPort), want)
	}
	if len(evs) != 1 || evs[0].Verdict != Redirected || evs[0].ProxyPort != proxyPort || evs[0].Ifindex != f.ifindex {
		t.Errorf("L7: ingress events %v, want one redirect to %d on ifindex %d", evs, proxyPort, f.ifindex)
	}
	if after := f.counters(); after.HostRouted != before.HostRouted {
		t.Errorf("L7: host routed %d -> %d, want unchanged", before.HostRouted, after.HostRouted)
	}
	// policy_to_pod on the destination's veth does the same for the same flow's next packet.
	if r := f.run(Ingress, f.ifindex, routed(p.frame())); r.mark != ToProxyMark(proxyPort) {
		t.Errorf("L7 on the veth: mark %#x, want %#x", r.mark, ToProxyMark(proxyPort))
	}
	drain(t, f.ev)

	// Falls back to the node's stack, frame untouched.
	untouched := func(what string, p pkt, mutate func([]byte)) {
		t.Helper()
		frame := p.frame()
		if mutate != nil {
			mutate(frame)
		}
		before := f.counters()
		r := f.run(Egress, srcIfindex, frame)
		if !r.passed() || !bytes.Equal(r.data[:len(frame)], frame) {
			t.Errorf("%s: returned %d, frame changed %t; want pass, untouched", what, int32(r.ret), !bytes.Equal(r.data[:len(frame)], frame))
		}
		if evs := ingress(drain(t, f.ev)); len(evs) != 0 {
			t.Errorf("%s: ingress events %v, want none", what, evs)
		}
		if after := f.counters(); after.HostRouted != before.HostRouted {
			t.Errorf("%s: host routed", what)
		}
	}
	untouched("not a local endpoint", pkt{src: netip.MustParseAddr(peer(1)), dst: netip.MustParseAddr(peer(2)), proto: TCP, sport: f.nextPort(), dport: 80, flags: SYN}, nil)
	untouched("TTL 1", fromPod(80), func(b []byte) {
		b[14+8] = 1
		binary.BigEndian.PutUint16(b[14+10:], 0)
		binary.BigEndian.PutUint16(b[14+10:], checksum(b[14:34]))
	})
	frag := fromPod(80)
	frag.moreFrags = true
	untouched("first fragment", frag, nil)
	// A socket of the node's netns would take it (as the proxy's
	// transparent upstream sockets take their replies).
	var ln net.Listener
	f.testEnv.in(func() (err error) {
		ln, err = net.Listen("tcp4", "0.0.0.0:9999")
		return err
	})
	untouched("to a node socket", fromPod(9999), nil)
	ln.Close()
	if r := f.run(Egress, srcIfindex, fromPod(9999).frame()); !r.dropped() {
		t.Errorf("without the node socket: returned %d, want the destination's policy drop", int32(r.ret))
	}
	drain(t, f.ev)

	// Switched off by the loader: the node's stack, as before.
	g := newFixture(t, Options{}, Endpoint{})
	gsrc := g.veth("mbr1")
	must(t, g.dp.UpsertEndpoint(gsrc, Endpoint{ID: 8, Identity: peerID(1), Addr: netip.MustParseAddr(peer(1))}))
	must(t, g.dp.UpsertLocalRoute(netip.MustParseAddr(podAddr), LocalRoute{Ifindex: g.ifindex, PodMAC: route.PodMAC, HostMAC: route.HostMAC}))
	must(t, g.dp.SetEndpointPolicy(epID, []Rule{{Key: in(80), Entry: PolicyEntry{Verdict: Allow}}}))
	p = fromPod(80)
	if r := g.run(Egress, gsrc, p.frame()); !r.passed() || !bytes.Equal(r.data[:len(p.frame())], p.frame()) {
		t.Errorf("host routing off: returned %d, want pass with the frame untouched", int32(r.ret))
	}
	if evs := ingress(drain(t, g.ev)); len(evs) != 0 {
		t.Errorf("host routing off: ingress events %v, want none", evs)
	}
}

// routedFrame is frame as the node's router forwards it on route: the
// link's Ethernet addresses, the TTL decremented, the checksum updated.
func routedFrame(frame []byte, route LocalRoute) []byte {
	r := bytes.Clone(frame)
	copy(r[0:6], route.PodMAC)
	copy(r[6:12], route.HostMAC)
	r[14+8]--
	binary.BigEndian.PutUint16(r[14+10:], 0)
	binary.BigEndian.PutUint16(r[14+10:], checksum(r[14:34]))
	return r
}

package policy

import (
	"bytes"
	"net/netip"
	"testing"
)

// swappedMACs is frame with its Ethernet source and destination swapped.
func swappedMACs(frame []byte) []byte {
	s := bytes.Clone(frame)
	copy(s[0:6], frame[6:12])
	copy(s[6:12], frame[0:6])
	return s
}

// TestRedirectToProxy: to the pod, a redirected flow is hairpinned to the
// host veth's ingress with the proxy's mark; the proxy's own packets (mark
// MarkMagicFromProxy) meet L3/L4 policy but are never redirected. BPF_PROG_RUN
// returns bpf_redirect's verdict without redirecting; the frame and mark it
// left are checked, the real hairpin through TPROXY is an end-to-end test.
func TestRedirectToProxy(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	const proxyPort = 15001
	in := func(n int) PolicyKey {
		return PolicyKey{Direction: Ingress, RemoteIdentity: peerID(n), Proto: TCP, Port: 80}
	}
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: in(1), Entry: PolicyEntry{Verdict: Redirect, ProxyPort: proxyPort}},
		{Key: in(2), Entry: PolicyEntry{Verdict: Allow}},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(3)}, Entry: PolicyEntry{Verdict: Deny}},
	}))
	hairpinned := func(what string, r runResult, frame []byte) {
		t.Helper()
		if !r.redirected() {
			t.Errorf("%s: returned %d, want redirect (%d)", what, int32(r.ret), retRedirect)
		}
		if want := ToProxyMark(proxyPort); r.mark != want {
			t.Errorf("%s: mark %#x, want %#x", what, r.mark, want)
		}
		if want := swappedMACs(frame); !bytes.Equal(r.data, want) {
			t.Errorf("%s: frame\n %x\nwant (MACs swapped)\n %x", what, r.data, want)
		}
	}
	untouched := func(what string, r runResult, mark uint32, frame []byte) {
		t.Helper()
		if !r.passed() || r.mark != mark || !bytes.Equal(r.data, frame) {
			t.Errorf("%s: returned %d, mark %#x, frame changed %t; want pass with mark %#x, frame untouched",
				what, int32(r.ret), r.mark, !bytes.Equal(r.data, frame), mark)
		}
	}

	// A new flow, then a later packet of it: both to the proxy.
	syn := f.in(1, TCP, 80)
	r := f.run(Ingress, f.ifindex, syn.frame())
	hairpinned("SYN", r, syn.frame())
	evs := drain(t, f.ev)
	if len(evs) != 1 || evs[0].Verdict != Redirected || evs[0].ProxyPort != proxyPort ||
		evs[0].Direction != Ingress || evs[0].CTState != CTNew || evs[0].SrcIdentity != peerID(1) {
		t.Errorf("SYN events %v, want one new ingress redirect to %d from %s", evs, proxyPort, peerID(1))
	}
	ack := syn.reverse(SYN | ACK).reverse(ACK)
	hairpinned("established ACK", f.run(Ingress, f.ifindex, ack.frame()), ack.frame())
	// Whatever mark the host gave the packet is replaced.
	hairpinned("established, marked", f.runMarked(Ingress, f.ifindex, 0xbeef0b00, ack.frame()), ack.frame())
	if evs := drain(t, f.ev); len(evs) != 0 {
		t.Errorf("established packets emitted %v", evs)
	}
	if c := f.counters(); c.Ingress.Redirected.Packets != 3 || c.Ingress.Forwarded.Packets != 0 {
		t.Errorf("ingress counters %+v, want 3 redirected", c.Ingress)
	}

	// The same tuple from the proxy (mark bits outside the magic ignored):
	// allowed by its conntrack entry, not redirected.
	for _, mark := range []uint32{MarkMagicFromProxy, 0xbeef0000 | 0x1000 | MarkMagicFromProxy | 0xff} {
		untouched("established from the proxy", f.runMarked(Ingress, f.ifindex, mark, ack.frame()), mark, ack.frame())
	}

	// The proxy's upstream connection (source: the client, original_src):
	// policy allows it, as a plain allow, with a conntrack entry of its own.
	up := f.in(1, TCP, 80)
	untouched("SYN from the proxy", f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, up.frame()), MarkMagicFromProxy, up.frame())
	evs = drain(t, f.ev)
	if len(evs) != 1 || evs[0].Verdict != Forwarded || evs[0].ProxyPort != 0 || evs[0].Match != MatchL3L4 {
		t.Errorf("SYN from the proxy: events %v, want one forwarded L3/L4 match", evs)
	}
	upAck := up.reverse(SYN | ACK).reverse(ACK)
	untouched("ACK from the proxy", f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, upAck.frame()), MarkMagicFromProxy, upAck.frame())
	conns, err := f.dp.DumpConntrack()
	must(t, err)
	ports := map[uint16]uint16{} // source port -> proxy port
	for _, c := range conns {
		if c.Ifindex == f.ifindex && c.Direction == Ingress {
			ports[c.Src.Port()] = c.ProxyPort
		}
	}
	if p, ok := ports[syn.sport]; !ok || p != proxyPort {
		t.Errorf("redirected flow's conntrack proxy port %d (found %t), want %d", p, ok, proxyPort)
	}
	if p, ok := ports[up.sport]; !ok || p != 0 {
		t.Errorf("proxy's flow conntrack proxy port %d (found %t), want 0", p, ok)
	}

	// Policy still applies to the proxy's packets.
	for _, c := range []struct {
		what string
		p    pkt
		want DropReason
	}{
		{"denied peer", f.in(3, TCP, 80), DropPolicyDenyList},
		{"no entry", f.in(4, TCP, 80), DropPolicyDenied},
		{"redirected peer, other port", f.in(1, TCP, 81), DropPolicyDenied},
	} {
		r := f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, c.p.frame())
		evs := drain(t, f.ev)
		if !r.dropped() || len(evs) != 1 || evs[0].DropReason != c.want {
			t.Errorf("%s from the proxy: returned %d, events %v; want a drop for %q", c.what, int32(r.ret), evs, c.want)
		}
	}
	// An allowed peer passes with or without the proxy's mark.
	allowed := f.in(2, TCP, 80)
	untouched("allowed peer", f.run(Ingress, f.ifindex, allowed.frame()), 0, allowed.frame())
	allowed = f.in(2, TCP, 80)
	untouched("allowed peer from the proxy", f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, allowed.frame()), MarkMagicFromProxy, allowed.frame())
	drain(t, f.ev)
}

// TestProxyHairpinFromPod: a packet hairpinned to the proxy meets
// policy_from_pod on its way back into the stack and passes untouched: no
// parsing, source address check, conntrack or event.
func TestProxyHairpinFromPod(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: epIdentity, Addr: netip.MustParseAddr(podAddr), EnforceEgress: true})
	// A client's packet to the pod: not the pod's source address, and no
	// egress policy allows it.
	p := f.in(1, TCP, 80)
	for _, mark := range []uint32{ToProxyMark(15001), MarkMagicToProxy, 0x1000 | MarkMagicToProxy | 0xff} {
		fr := p.frame()
		r := f.runMarked(Egress, f.ifindex, mark, fr)
		if !r.passed() || r.mark != mark || !bytes.Equal(r.data, fr) {
			t.Errorf("mark %#x: returned %d, mark %#x; want untouched pass", mark, int32(r.ret), r.mark)
		}
	}
	if evs := drain(t, f.ev); len(evs) != 0 {
		t.Errorf("hairpinned packets emitted %v", evs)
	}
	c := f.counters()
	if c.ProxyHairpin != 3 || c.CTCreated != 0 || c.Egress.Forwarded.Packets != 0 || len(c.Egress.Dropped) != 0 {
		t.Errorf("counters %+v, want 3 hairpinned and nothing else", c)
	}
	// Other marks are checked as usual.
	for _, mark := range []uint32{0, MarkMagicFromProxy, 0x0300} {
		r := f.runMarked(Egress, f.ifindex, mark, p.frame())
		evs := drain(t, f.ev)
		if !r.dropped() || len(evs) != 1 || evs[0].DropReason != DropInvalidSourceIP {
			t.Errorf("mark %#x: returned %d, events %v; want a drop for the source address", mark, int32(r.ret), evs)
		}
	}
}

// TestProxyMarks pins the Go marks to Cilium's values; the BPF_PROG_RUN
// tests above hold the C side to them.
func TestProxyMarks(t *testing.T) {
	if MarkMagicMask != 0x0F00 || MarkMagicToProxy != 0x0200 || MarkMagicFromProxy != 0x0A00 {
		t.Errorf("marks %#x %#x %#x", MarkMagicMask, MarkMagicToProxy, MarkMagicFromProxy)
	}
	if got := ToProxyMark(15001); got != 0x3a990200 || got&MarkMagicMask != MarkMagicToProxy {
		t.Errorf("ToProxyMark(15001) = %#x", got)
	}
}

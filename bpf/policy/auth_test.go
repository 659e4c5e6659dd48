package policy

import (
	"net/netip"
	"testing"
)

// TestAuthFromProxyOnly: a new flow matched by an entry requiring
// authentication passes only with the proxy's mark (the node proxy
// authenticated it); without (a pod, the host, a spoofed source) it is
// dropped, and an authenticated entry with an L7 redirect is dropped even
// from the proxy (the two do not compose).
func TestAuthFromProxyOnly(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: 8080}, Entry: PolicyEntry{Verdict: Allow, AuthRequired: true}},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(2), Proto: TCP, Port: 8080}, Entry: PolicyEntry{Verdict: Redirect, ProxyPort: 15001, AuthRequired: true}},
	}))
	f.expect(t, "unmarked", Ingress, f.in(1, TCP, 8080), DropAuthRequired)
	for _, mark := range []uint32{MarkMagicToProxy, 0x0300} {
		r := f.runMarked(Ingress, f.ifindex, mark, f.in(1, TCP, 8080).frame())
		if evs := drain(t, f.ev); !r.dropped() || len(evs) != 1 || evs[0].DropReason != DropAuthRequired {
			t.Errorf("mark %#x: returned %d, events %v; want a drop for authentication", mark, int32(r.ret), evs)
		}
	}
	p := f.in(1, TCP, 8080)
	if r := f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, p.frame()); !r.passed() {
		t.Errorf("from the proxy: returned %d, want pass", int32(r.ret))
	}
	drain(t, f.ev)
	// The reply and the rest of the flow pass on its conntrack entry.
	if r := f.run(Egress, f.ifindex, p.reverse(SYN|ACK).frame()); !r.passed() {
		t.Errorf("reply: returned %d, want pass", int32(r.ret))
	}
	r := f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, f.in(2, TCP, 8080).frame())
	if evs := drain(t, f.ev); !r.dropped() || len(evs) != 1 || evs[0].DropReason != DropAuthRequired {
		t.Errorf("L7 and authentication from the proxy: returned %d, events %v; want a drop", int32(r.ret), evs)
	}
}

// TestAuthEgressRedirect: an endpoint not enforced at egress but with
// AuthEgress sends the flows its redirects match to the authenticating
// listener (the mark names its port), and everything else passes as before.
func TestAuthEgressRedirect(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: epIdentity, Addr: netip.MustParseAddr(podAddr), AuthEgress: true})
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: PolicyKey{Direction: Egress, RemoteIdentity: peerID(1), Proto: TCP, Port: 8080}, Entry: PolicyEntry{Verdict: Redirect, ProxyPort: 15002}},
	}))
	r := f.run(Egress, f.ifindex, f.out(1, TCP, 8080).frame())
	if !r.passed() || r.mark != ToProxyMark(15002) {
		t.Errorf("to an authenticated port: returned %d, mark %#x; want pass with %#x", int32(r.ret), r.mark, ToProxyMark(15002))
	}
	for _, p := range []pkt{f.out(1, TCP, 9090), f.out(2, TCP, 8080), f.out(1, UDP, 8080)} {
		if r := f.run(Egress, f.ifindex, p.frame()); !r.passed() || r.mark != 0 {
			t.Errorf("%v: returned %d, mark %#x; want an unmarked pass", p, int32(r.ret), r.mark)
		}
	}
	drain(t, f.ev)
	// Without the flag the same endpoint is not looked up at egress.
	must(t, f.dp.UpsertEndpoint(f.ifindex, Endpoint{ID: epID, Identity: epIdentity, Addr: netip.MustParseAddr(podAddr)}))
	if r := f.run(Egress, f.ifindex, f.out(1, TCP, 8080).frame()); !r.passed() || r.mark != 0 {
		t.Errorf("without AuthEgress: returned %d, mark %#x; want an unmarked pass", int32(r.ret), r.mark)
	}
}

// TestAuthRequiredOnOpenFlows: when a port starts to require
// authentication, an open flow that did not come through the proxy is
// dropped at its next packet; one from the proxy goes on.
func TestAuthRequiredOnOpenFlows(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	set := func(auth bool) {
		t.Helper()
		must(t, f.dp.SetEndpointPolicy(epID, []Rule{
			{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: 8080}, Entry: PolicyEntry{Verdict: Allow, AuthRequired: auth}},
		}))
		must(t, f.dp.Revise())
	}
	set(false)
	direct, proxied := f.in(1, TCP, 8080), f.in(1, TCP, 8080)
	f.expect(t, "direct SYN", Ingress, direct, DropNone)
	if r := f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, proxied.frame()); !r.passed() {
		t.Fatalf("SYN from the proxy: returned %d, want pass", int32(r.ret))
	}
	drain(t, f.ev)
	set(true)
	f.expect(t, "direct data", Ingress, direct.reverse(SYN|ACK).reverse(ACK|PSH), DropAuthRequired)
	if r := f.runMarked(Ingress, f.ifindex, MarkMagicFromProxy, proxied.reverse(SYN|ACK).reverse(ACK|PSH).frame()); !r.passed() {
		t.Errorf("data from the proxy: returned %d, want pass", int32(r.ret))
	}
}

package policy

import (
	"net/netip"
	"testing"
	"time"
)

func TestIPCacheLongestPrefix(t *testing.T) {
	// Nothing enforced: every packet passes with a trace event naming the
	// identities the ipcache gave.
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: epIdentity})
	for p, id := range map[string]Identity{
		"10.0.0.0/8":   100,
		"10.1.0.0/16":  200,
		"10.1.2.77/24": 250, // host bits ignored: 10.1.2.0/24
		"10.1.2.3/32":  300,
	} {
		must(t, f.dp.UpsertIPCache(prefix(p), id))
	}
	srcID := func(src string) Identity {
		t.Helper()
		p := udpPkt(src, podAddr, f.nextPort(), 53)
		evs := f.expect(t, "from "+src, Ingress, p, DropNone)
		if len(evs) != 1 {
			t.Fatalf("from %s: events %v, want one trace", src, evs)
		}
		if evs[0].DstIdentity != epIdentity {
			t.Errorf("from %s: destination identity %s, want the endpoint's %s", src, evs[0].DstIdentity, epIdentity)
		}
		return evs[0].SrcIdentity
	}
	for src, want := range map[string]Identity{
		"10.1.2.3":   300,
		"10.1.2.4":   250,
		"10.1.3.1":   200,
		"10.9.9.9":   100,
		"192.0.2.1":  IdentityWorld, // no prefix: world
		"10.1.0.5":   peerID(5),
		"10.244.0.9": 100,
	} {
		if got := srcID(src); got != want {
			t.Errorf("identity of %s: %s, want %s", src, got, want)
		}
	}
	must(t, f.dp.UpsertIPCache(prefix("0.0.0.0/0"), IdentityWorld))
	must(t, f.dp.UpsertIPCache(prefix("192.0.2.0/24"), IdentityHost))
	must(t, f.dp.DeleteIPCache(prefix("10.1.2.3/32")))
	must(t, f.dp.DeleteIPCache(prefix("10.1.2.3/32"))) // missing is fine
	for src, want := range map[string]Identity{
		"10.1.2.3":     250,
		"192.0.2.1":    IdentityHost,
		"198.51.100.1": IdentityWorld,
	} {
		if got := srcID(src); got != want {
			t.Errorf("identity of %s after changes: %s, want %s", src, got, want)
		}
	}

	// Egress: the destination's identity. An interface without an
	// endpoint takes its own side's identity from the ipcache too.
	p := udpPkt(podAddr, "10.1.3.1", f.nextPort(), 53)
	evs := f.expect(t, "egress", Egress, p, DropNone)
	if len(evs) != 1 || evs[0].SrcIdentity != epIdentity || evs[0].DstIdentity != 200 || evs[0].Direction != Egress {
		t.Errorf("egress events %v, want one with %s -> 200", evs, epIdentity)
	}
	other := f.veth("mbr1")
	f.run(Egress, other, udpPkt("10.1.2.3", "10.9.0.1", 1, 2).frame())
	evs = drain(t, f.ev)
	if len(evs) != 1 || evs[0].SrcIdentity != 250 || evs[0].DstIdentity != 100 || evs[0].EndpointID != 0 || evs[0].Ifindex != other {
		t.Errorf("events on an interface without endpoint %v, want 250 -> 100, endpoint 0, ifindex %d", evs, other)
	}

	for _, bad := range []netip.Prefix{prefix("fd00::/64"), prefix("::ffff:10.0.0.0/8"), {}} {
		if err := f.dp.UpsertIPCache(bad, 1); err == nil {
			t.Errorf("UpsertIPCache(%s) accepted", bad)
		}
	}
	if err := f.dp.UpsertIPCache(prefix("::ffff:10.7.0.0/112"), 77); err != nil {
		t.Errorf("IPv4-mapped prefix: %v", err)
	}
	if err := f.dp.UpsertIPCache(prefix("10.7.0.0/16"), IdentityAny); err == nil {
		t.Error("identity 0 accepted")
	}
	d, err := f.dp.Dump()
	must(t, err)
	found := false
	for _, e := range d.IPCache {
		if e.Prefix == prefix("10.7.0.0/16") && e.Identity == 77 {
			found = true
		}
	}
	if !found {
		t.Errorf("dump %v lacks 10.7.0.0/16 -> 77", d.IPCache)
	}
}

// TestPolicyVerdicts covers the lookup: identity and port, L3-only, port
// ranges, any identity, any protocol, ICMP types, redirects, auth and the
// precedence of deny entries.
func TestPolicyVerdicts(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	in := func(n int, proto Proto, port, end uint16) PolicyKey {
		return PolicyKey{Direction: Ingress, RemoteIdentity: peerID(n), Proto: proto, Port: port, EndPort: end}
	}
	anyIn := func(proto Proto, port, end uint16) PolicyKey {
		return PolicyKey{Direction: Ingress, Proto: proto, Port: port, EndPort: end}
	}
	allow := PolicyEntry{Verdict: Allow}
	deny := PolicyEntry{Verdict: Deny}
	rules := []Rule{
		{in(1, TCP, 80, 0), allow},
		{in(2, AnyProto, 0, 0), allow},
		{in(3, TCP, 8000, 8099), allow},
		{anyIn(UDP, 53, 0), allow},
		// Deny wins: an L3 deny over an L4 allow of the same peer ...
		{in(4, AnyProto, 0, 0), deny},
		{in(4, TCP, 443, 0), allow},
		// ... a deny of any peer over a peer's L3 allow ...
		{anyIn(TCP, 22, 0), deny},
		// ... an exact-port deny inside an allowed range ...
		{in(3, TCP, 8050, 0), deny},
		// ... and a denied range around an allowed port.
		{in(5, TCP, 9000, 9999), deny},
		{in(5, TCP, 9500, 0), allow},
		{in(6, TCP, 7000, 0), PolicyEntry{Verdict: Allow, AuthRequired: true}},
		{in(6, TCP, 7001, 0), PolicyEntry{Verdict: Redirect, ProxyPort: 15001}},
		// Any protocol with a port: TCP, UDP and SCTP.
		{in(7, AnyProto, 5000, 0), allow},
		{in(7, ICMP, 8, 0), allow}, // echo requests only
		// Equal specificity: a redirect beats an allow; longer prefix wins.
		{in(1, TCP, 8443, 0), allow},
		{anyIn(TCP, 8443, 0), PolicyEntry{Verdict: Redirect, ProxyPort: 15002}},
		// An auth requirement of a covering entry applies to covered ones.
		{in(8, TCP, 0, 0), PolicyEntry{Verdict: Allow, AuthRequired: true}},
		{in(8, TCP, 6000, 0), allow},
		{in(8, UDP, 6000, 0), allow},

		{PolicyKey{Direction: Egress, RemoteIdentity: peerID(1), Proto: TCP, Port: 80}, allow},
		{PolicyKey{Direction: Egress, Proto: TCP, Port: 3128}, PolicyEntry{Verdict: Redirect, ProxyPort: 15003}},
	}
	must(t, f.dp.SetEndpointPolicy(epID, rules))

	for _, c := range []struct {
		what  string
		dir   Direction
		p     pkt
		want  DropReason
		match PolicyMatch
	}{
		{"identity+port", Ingress, f.in(1, TCP, 80), DropNone, MatchL3L4},
		{"identity, other port", Ingress, f.in(1, TCP, 81), DropPolicyDenied, MatchNone},
		{"identity, other proto", Ingress, f.in(1, UDP, 80), DropPolicyDenied, MatchNone},
		{"L3-only TCP", Ingress, f.in(2, TCP, 12345), DropNone, MatchL3Only},
		{"L3-only UDP", Ingress, f.in(2, UDP, 1), DropNone, MatchL3Only},
		{"L3-only ICMP", Ingress, icmpPkt(peer(2), podAddr, 8, 0, f.nextPort()), DropNone, MatchL3Only},
		{"range low end", Ingress, f.in(3, TCP, 8000), DropNone, MatchL3L4},
		{"range middle", Ingress, f.in(3, TCP, 8049), DropNone, MatchL3L4},
		{"range high end", Ingress, f.in(3, TCP, 8099), DropNone, MatchL3L4},
		{"below range", Ingress, f.in(3, TCP, 7999), DropPolicyDenied, MatchNone},
		{"above range", Ingress, f.in(3, TCP, 8100), DropPolicyDenied, MatchNone},
		{"deny port inside range", Ingress, f.in(3, TCP, 8050), DropPolicyDenyList, MatchNone},
		{"any identity", Ingress, f.in(9, UDP, 53), DropNone, MatchL4Only},
		{"world, any identity", Ingress, udpPkt("192.0.2.9", podAddr, f.nextPort(), 53), DropNone, MatchL4Only},
		{"unknown peer", Ingress, f.in(9, TCP, 80), DropPolicyDenied, MatchNone},
		{"L3 deny over L4 allow", Ingress, f.in(4, TCP, 443), DropPolicyDenyList, MatchNone},
		{"L3 deny, other port", Ingress, f.in(4, UDP, 53), DropPolicyDenyList, MatchNone},
		{"any-identity deny over L3 allow", Ingress, f.in(2, TCP, 22), DropPolicyDenyList, MatchNone},
		{"denied range around allowed port", Ingress, f.in(5, TCP, 9500), DropPolicyDenyList, MatchNone},
		{"denied range", Ingress, f.in(5, TCP, 9999), DropPolicyDenyList, MatchNone},
		{"outside denied range", Ingress, f.in(5, TCP, 10000), DropPolicyDenied, MatchNone},
		{"auth required", Ingress, f.in(6, TCP, 7000), DropAuthRequired, MatchNone},
		{"redirect", Ingress, f.in(6, TCP, 7001), DropNone, MatchL3L4},
		{"any proto+port: TCP", Ingress, f.in(7, TCP, 5000), DropNone, MatchL3L4},
		{"any proto+port: UDP", Ingress, f.in(7, UDP, 5000), DropNone, MatchL3L4},
		{"any proto+port: SCTP", Ingress, f.in(7, SCTP, 5000), DropNone, MatchL3L4},
		{"any proto+port: other port", Ingress, f.in(7, TCP, 5001), DropPolicyDenied, MatchNone},
		{"ICMP echo request", Ingress, icmpPkt(peer(7), podAddr, 8, 0, f.nextPort()), DropNone, MatchL3L4},
		{"ICMP timestamp", Ingress, icmpPkt(peer(7), podAddr, 13, 0, f.nextPort()), DropPolicyDenied, MatchNone},
		{"tie: redirect beats allow", Ingress, f.in(1, TCP, 8443), DropNone, MatchL4Only},
		{"longer prefix beats L3", Ingress, f.in(2, TCP, 8443), DropNone, MatchL4Only},
		{"inherited auth", Ingress, f.in(8, TCP, 6000), DropAuthRequired, MatchNone},
		{"no auth on UDP", Ingress, f.in(8, UDP, 6000), DropNone, MatchL3L4},
		{"egress allowed", Egress, f.out(1, TCP, 80), DropNone, MatchL3L4},
		{"egress default deny", Egress, f.out(2, TCP, 80), DropPolicyDenied, MatchNone},
		{"egress redirect", Egress, f.out(3, TCP, 3128), DropNone, MatchL4Only},
	} {
		evs := f.expect(t, c.what, c.dir, c.p, c.want)
		if len(evs) != 1 {
			t.Errorf("%s: %d events, want 1: %v", c.what, len(evs), evs)
			continue
		}
		if evs[0].Match != c.match {
			t.Errorf("%s: match %s, want %s", c.what, evs[0].Match, c.match)
		}
	}

	// Redirects: the event names the proxy port; from the pod, the mark
	// carries it (Cilium's MARK_MAGIC_TO_PROXY). To the pod: redirect_test.go.
	p := f.out(3, TCP, 3128)
	r := f.run(Egress, f.ifindex, p.frame())
	evs := drain(t, f.ev)
	if want := ToProxyMark(15003); !r.passed() || r.mark != want {
		t.Errorf("egress redirect: %+v, want pass with mark %#x", r, want)
	}
	if len(evs) != 1 || evs[0].Verdict != Redirected || evs[0].ProxyPort != 15003 {
		t.Errorf("egress redirect events %v", evs)
	}
	// Later packets of the flow are redirected too.
	r = f.run(Egress, f.ifindex, p.reverse(SYN|ACK).reverse(ACK).frame())
	if !r.passed() || r.mark>>16 != 15003 {
		t.Errorf("established redirected flow: %+v", r)
	}
	evs = f.expect(t, "ingress redirect", Ingress, f.in(1, TCP, 8443), DropNone)
	if len(evs) != 1 || evs[0].Verdict != Redirected || evs[0].ProxyPort != 15002 {
		t.Errorf("ingress redirect events %v", evs)
	}
}

func TestDefaultDenyAndUnenforced(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: epIdentity, EnforceIngress: true})
	// Enforced without any entry: everything new is denied.
	f.expect(t, "enforced ingress, no policy", Ingress, f.in(1, TCP, 80), DropPolicyDenied)
	// Not enforced: passes, tracked and traced.
	evs := f.expect(t, "unenforced egress", Egress, f.out(1, TCP, 80), DropNone)
	if len(evs) != 1 || evs[0].Verdict != Forwarded || evs[0].CTState != CTNew || evs[0].Match != MatchNone {
		t.Errorf("unenforced egress events %v, want one new forwarded trace", evs)
	}
	// Egress entries do not matter while egress is not enforced.
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{{Key: PolicyKey{Direction: Egress, Proto: AnyProto}, Entry: PolicyEntry{Verdict: Deny}}}))
	f.expect(t, "unenforced egress with a deny entry", Egress, f.out(1, TCP, 80), DropNone)

	// An interface without endpoint: nothing enforced, still tracked.
	other := f.veth("mbr1")
	before := f.counters().CTCreated
	if r := f.run(Ingress, other, f.in(1, TCP, 80).frame()); !r.passed() {
		t.Errorf("interface without endpoint: %+v, want pass", r)
	}
	if got := f.counters().CTCreated; got != before+1 {
		t.Errorf("conntrack entries created %d, want %d", got, before+1)
	}

	// Removing the endpoint stops enforcement.
	must(t, f.dp.DeleteEndpoint(f.ifindex))
	f.expect(t, "after DeleteEndpoint", Ingress, f.in(1, TCP, 80), DropNone)
	must(t, f.dp.DeleteEndpoint(f.ifindex))
}

// TestInitIdentity: an endpoint with the init identity drops new flows both
// ways ("Policy not yet known"), whatever its flags and entries, except from
// the node; written with its real identity, its policy applies.
func TestInitIdentity(t *testing.T) {
	// As datapath.Writer writes it: enforcing both ways, so tracked.
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: IdentityInit, Addr: netip.MustParseAddr(podAddr), EnforceIngress: true, EnforceEgress: true})
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{{Key: PolicyKey{Direction: Egress, Proto: AnyProto}, Entry: PolicyEntry{Verdict: Allow}}}))
	f.expect(t, "init, egress", Egress, f.out(1, TCP, 80), DropPolicyInit)
	f.expect(t, "init, ingress", Ingress, f.in(1, TCP, 80), DropPolicyInit)
	must(t, f.dp.UpsertIPCache(peerPrefix(2), IdentityHost))
	probe := f.in(2, TCP, 80)
	f.expect(t, "init, ingress from the node", Ingress, probe, DropNone)
	f.expect(t, "init, egress to the node", Egress, f.out(2, TCP, 80), DropPolicyInit)
	// The node's connection (a kubelet probe) goes on across a policy
	// change: checked again, as a new one, it is allowed.
	must(t, f.dp.Revise())
	f.expect(t, "init, the node's open connection after a change", Ingress, probe.reverse(SYN|ACK).reverse(ACK|PSH), DropNone)

	must(t, f.dp.UpsertEndpoint(f.ifindex, Endpoint{ID: epID, Identity: epIdentity, Addr: netip.MustParseAddr(podAddr)}))
	f.expect(t, "real identity, unenforced", Egress, f.out(1, TCP, 80), DropNone)
}

func TestConntrack(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	out := func(proto Proto, port uint16) PolicyKey {
		return PolicyKey{Direction: Egress, RemoteIdentity: peerID(1), Proto: proto, Port: port}
	}
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: out(TCP, 80), Entry: PolicyEntry{Verdict: Allow}},
		{Key: out(UDP, 53), Entry: PolicyEntry{Verdict: Allow}},
		{Key: out(ICMP, 0), Entry: PolicyEntry{Verdict: Allow}},
	}))
	// Ingress is enforced and allows nothing: only replies get in.

	syn := f.out(1, TCP, 80)
	evs := f.expect(t, "SYN", Egress, syn, DropNone)
	if len(evs) != 1 || evs[0].CTState != CTNew {
		t.Errorf("SYN events %v, want one new", evs)
	}
	if evs := f.expect(t, "SYN-ACK", Ingress, syn.reverse(SYN|ACK), DropNone); len(evs) != 0 {
		t.Errorf("reply emitted %v, want no trace for replies", evs)
	}
	f.expect(t, "ACK", Egress, syn.reverse(SYN|ACK).reverse(ACK), DropNone)
	f.expect(t, "data back", Ingress, syn.reverse(ACK|PSH), DropNone)
	// The peer opening its own connection is a new flow: denied.
	f.expect(t, "SYN from the peer", Ingress, f.in(1, TCP, 80), DropPolicyDenied)
	// So is a packet with the reply's tuple on another interface.
	other := f.veth("mbr1")
	must(t, f.dp.UpsertEndpoint(other, Endpoint{ID: 8, Identity: 5001, EnforceIngress: true}))
	if r := f.run(Ingress, other, syn.reverse(SYN|ACK).frame()); !r.dropped() {
		t.Errorf("reply on another interface: %+v, want drop", r)
	}
	drain(t, f.ev)

	query := udpPkt(podAddr, peer(1), f.nextPort(), 53)
	f.expect(t, "UDP query", Egress, query, DropNone)
	f.expect(t, "UDP answer", Ingress, query.reverse(0), DropNone)
	f.expect(t, "UDP to another port", Ingress, udpPkt(peer(1), podAddr, 53, query.sport+1), DropPolicyDenied)

	echo := icmpPkt(podAddr, peer(1), 8, 0, 4242)
	f.expect(t, "echo request", Egress, echo, DropNone)
	f.expect(t, "echo reply", Ingress, icmpPkt(peer(1), podAddr, 0, 0, 4242), DropNone)
	f.expect(t, "echo reply, other ID", Ingress, icmpPkt(peer(1), podAddr, 0, 0, 4243), DropPolicyDenied)
	f.expect(t, "echo request from the peer", Ingress, icmpPkt(peer(1), podAddr, 8, 0, 4242), DropPolicyDenied)

	// ICMP errors about a tracked flow are related; about others, new.
	unreach := icmpPkt(peer(1), podAddr, 3, 3, 0)
	unreach.quoted = query.quote()
	before := f.counters().CTRelated
	f.expect(t, "port unreachable about the query", Ingress, unreach, DropNone)
	if got := f.counters().CTRelated; got != before+1 {
		t.Errorf("related counter %d, want %d", got, before+1)
	}
	stray := icmpPkt(peer(1), podAddr, 3, 3, 0)
	stray.quoted = udpPkt(podAddr, peer(1), 9, 9).quote()
	f.expect(t, "port unreachable about nothing", Ingress, stray, DropPolicyDenied)

	// A conntrack entry per opened flow and direction.
	conns, err := f.dp.DumpConntrack()
	must(t, err)
	var tcp *Conn
	for i, c := range conns {
		if c.Proto == TCP && c.Src.Port() == syn.sport && c.Ifindex == f.ifindex {
			tcp = &conns[i]
		}
	}
	switch {
	case tcp == nil:
		t.Fatalf("no conntrack entry for the TCP flow in %+v", conns)
	case tcp.Direction != Egress || tcp.Dst != netip.AddrPortFrom(netip.MustParseAddr(peer(1)), 80):
		t.Errorf("conntrack entry %+v", *tcp)
	case !tcp.ReplySeen || tcp.OrigFlags != SYN|ACK || tcp.ReplyFlags != SYN|ACK|PSH:
		t.Errorf("conntrack flags %+v", *tcp)
	case tcp.PacketsOrig != 2 || tcp.PacketsReply != 2 || tcp.BytesOrig != 120:
		t.Errorf("conntrack counters %+v", *tcp)
	}
}

// TestEstablishedMeetsPolicyChange: after a policy change, a tracked
// flow's next packet in its own direction is checked again. A flow the
// policy no longer allows is dropped both ways until it allows it again;
// one the change leaves allowed goes on, and is checked once per change. A
// flow keeps the path it opened on when its port gains a redirect; a
// closed connection's tuple opening again is a new flow.
func TestEstablishedMeetsPolicyChange(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	// set writes rules and makes them the policy open flows meet.
	set := func(rules ...Rule) {
		t.Helper()
		must(t, f.dp.SetEndpointPolicy(epID, rules))
		must(t, f.dp.Revise())
	}
	allow := func(e PolicyEntry) {
		t.Helper()
		set(Rule{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: 80}, Entry: e})
	}
	allow(PolicyEntry{Verdict: Allow})
	syn := f.in(1, TCP, 80)
	f.expect(t, "SYN", Ingress, syn, DropNone)
	f.expect(t, "SYN-ACK", Egress, syn.reverse(SYN|ACK), DropNone)
	data := syn.reverse(SYN | ACK).reverse(ACK | PSH)
	answer := syn.reverse(ACK | PSH)
	rechecked := f.counters().CTRechecked
	for range 3 {
		f.expect(t, "data, no change", Ingress, data, DropNone)
		f.expect(t, "answer, no change", Egress, answer, DropNone)
	}
	if got := f.counters().CTRechecked; got != rechecked {
		t.Errorf("%d flows checked again without a policy change", got-rechecked)
	}

	// A change that still allows the flow (another peer gets in too).
	set(Rule{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Allow}},
		Rule{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(2), Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Allow}})
	f.expect(t, "data after a change that allows it", Ingress, data, DropNone)
	f.expect(t, "data again", Ingress, data, DropNone)
	if got := f.counters().CTRechecked; got != rechecked+1 {
		t.Errorf("checked again %d times after one change, want once", got-rechecked)
	}

	// Deny the peer altogether: new SYNs are dropped at once; the open flow
	// once the change is whole (Revise), both ways.
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{{
		Key:   PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1)},
		Entry: PolicyEntry{Verdict: Deny},
	}}))
	f.expect(t, "data after deny, not revised yet", Ingress, data, DropNone)
	must(t, f.dp.Revise())
	f.expect(t, "answer after deny, before the peer's next packet", Egress, answer, DropNone)
	evs := f.expect(t, "data after deny", Ingress, data, DropPolicyDenyList)
	if len(evs) != 1 || evs[0].CTState != CTEstablished {
		t.Errorf("events of the denied flow's packet %+v, want one, established", evs)
	}
	f.expect(t, "answer after deny", Egress, answer, DropPolicyDenyList)
	f.expect(t, "new SYN after deny", Ingress, f.in(1, TCP, 80), DropPolicyDenyList)
	conns, err := f.dp.DumpConntrack()
	must(t, err)
	denied := 0
	for _, c := range conns {
		if c.Src.Port() == syn.sport && c.Denied == DropPolicyDenyList {
			denied++
		}
	}
	if denied != 1 {
		t.Errorf("%d conntrack entries of the flow say it is denied, want 1: %+v", denied, conns)
	}
	// No policy at all for the enforced endpoint: still dropped, now for
	// the missing allow.
	set()
	f.expect(t, "data without policy", Ingress, data, DropPolicyDenied)

	// Allowed again: the flow goes on both ways.
	allow(PolicyEntry{Verdict: Allow})
	f.expect(t, "data, allowed again", Ingress, data, DropNone)
	f.expect(t, "answer, allowed again", Egress, answer, DropNone)

	// The port goes to the L7 proxy: this flow goes on directly (as it
	// opened), a new one is redirected.
	allow(PolicyEntry{Verdict: Redirect, ProxyPort: 15001})
	if evs := f.expect(t, "data, opened directly", Ingress, data, DropNone); len(evs) != 0 && evs[0].Verdict == Redirected {
		t.Errorf("an open flow went to the proxy: %v", evs)
	}
	if evs := f.expect(t, "new SYN, to the proxy", Ingress, f.in(1, TCP, 80), DropNone); len(evs) != 1 || evs[0].Verdict != Redirected {
		t.Errorf("new flow events %v, want one redirected", evs)
	}
	allow(PolicyEntry{Verdict: Allow})

	// FIN both ways, then the same tuple opens anew: checked as new.
	f.expect(t, "FIN", Ingress, syn.reverse(ACK).reverse(FIN|ACK), DropNone)
	f.expect(t, "FIN back", Egress, syn.reverse(FIN|ACK), DropNone)
	f.expect(t, "last ACK", Ingress, syn.reverse(ACK).reverse(ACK), DropNone)
	set()
	before := f.counters().CTReopened
	f.expect(t, "SYN on the closed tuple", Ingress, syn, DropPolicyDenied)
	if got := f.counters().CTReopened; got != before+1 {
		t.Errorf("reopened counter %d, want %d", got, before+1)
	}
}

func TestConntrackExpiry(t *testing.T) {
	f := newFixture(t, Options{CTTimeoutOther: time.Second}, Endpoint{})
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{{
		Key:   PolicyKey{Direction: Egress, Proto: UDP, Port: 53},
		Entry: PolicyEntry{Verdict: Allow},
	}}))
	q := udpPkt(podAddr, peer(1), f.nextPort(), 53)
	f.expect(t, "query", Egress, q, DropNone)
	f.expect(t, "answer", Ingress, q.reverse(0), DropNone)
	time.Sleep(2200 * time.Millisecond)
	f.expect(t, "answer after the flow expired", Ingress, q.reverse(0), DropPolicyDenied)
	if c := f.counters(); c.CTExpired < 1 {
		t.Errorf("expired counter %d, want >= 1", c.CTExpired)
	}
}

func TestSourceAddressCheck(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: epIdentity, Addr: netip.MustParseAddr(podAddr)})
	f.expect(t, "own address", Egress, f.out(1, TCP, 80), DropNone)
	spoofed := f.out(1, TCP, 80)
	spoofed.src = netip.MustParseAddr(peer(2))
	evs := f.expect(t, "spoofed source", Egress, spoofed, DropInvalidSourceIP)
	if len(evs) == 1 && evs[0].SrcIdentity != epIdentity {
		t.Errorf("spoofed source: source identity %s, want the endpoint's", evs[0].SrcIdentity)
	}
	// Ingress packets are not checked.
	f.expect(t, "ingress", Ingress, f.in(1, TCP, 80), DropNone)
}

func TestFragments(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{{
		Key:   PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: UDP, Port: 53},
		Entry: PolicyEntry{Verdict: Allow},
	}}))
	frag := func(p pkt, id, offset uint16, more bool) pkt {
		p.ipID, p.fragOffset, p.moreFrags = id, offset, more
		p.payload = make([]byte, 16)
		return p
	}
	ok := udpPkt(peer(1), podAddr, f.nextPort(), 53)
	f.expect(t, "first fragment", Ingress, frag(ok, 77, 0, true), DropNone)
	f.expect(t, "middle fragment", Ingress, frag(ok, 77, 3, true), DropNone)
	f.expect(t, "last fragment", Ingress, frag(ok, 77, 6, false), DropNone)

	bad := udpPkt(peer(1), podAddr, f.nextPort(), 54)
	f.expect(t, "first fragment, denied port", Ingress, frag(bad, 78, 0, true), DropPolicyDenied)
	f.expect(t, "later fragment, denied port", Ingress, frag(bad, 78, 3, false), DropPolicyDenied)
	f.expect(t, "later fragment without a first", Ingress, frag(ok, 79, 3, false), DropFragmentNotFound)
}

func TestInvalidPackets(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	short := f.in(1, TCP, 80)
	short.truncateL4 = true
	f.expect(t, "truncated TCP header", Ingress, short, DropCTInvalidHeader)
	bad := f.in(1, TCP, 80).frame()
	bad[14] = 0x44 // IHL 4: shorter than the header
	if r := f.run(Ingress, f.ifindex, bad); !r.dropped() {
		t.Errorf("bad IHL: %+v", r)
	}
	if evs := drain(t, f.ev); len(evs) != 1 || evs[0].DropReason != DropInvalidPacket {
		t.Errorf("bad IHL events %v", evs)
	}
}

// TestNonIPv4 passes ARP and IPv6 untouched (IPv4-only cluster).
func TestNonIPv4(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	arp := ethFrame(0x0806, make([]byte, 28))
	ip6 := ethFrame(0x86dd, make([]byte, 40))
	for _, dir := range []Direction{Ingress, Egress} {
		for name, fr := range map[string][]byte{"ARP": arp, "IPv6": ip6} {
			if r := f.run(dir, f.ifindex, fr); !r.passed() || r.mark != 0 {
				t.Errorf("%s %s: %+v, want untouched pass", dir, name, r)
			}
		}
	}
	if evs := drain(t, f.ev); len(evs) != 0 {
		t.Errorf("events for non-IPv4: %v", evs)
	}
	c := f.counters()
	if c.NotIPv4 != 4 || c.Ingress.Forwarded.Packets != 0 || len(c.Ingress.Dropped) != 0 {
		t.Errorf("counters %+v, want 4 not-IPv4 and nothing else", c)
	}
}

func TestCountersAndEvents(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{})
	must(t, f.dp.SetEndpointPolicy(epID, []Rule{
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Allow}},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(2)}, Entry: PolicyEntry{Verdict: Deny}},
	}))
	start := time.Now()
	denied := f.in(3, TCP, 8080)
	evs := f.expect(t, "denied", Ingress, denied, DropPolicyDenied)
	if len(evs) != 1 {
		t.Fatalf("events %v", evs)
	}
	ev := evs[0]
	want := FlowEvent{
		Time:        ev.Time,
		Ifindex:     f.ifindex,
		EndpointID:  epID,
		Direction:   Ingress,
		Verdict:     Dropped,
		DropReason:  DropPolicyDenied,
		CTState:     CTNew,
		Proto:       TCP,
		Src:         netip.AddrPortFrom(denied.src, denied.sport),
		Dst:         netip.AddrPortFrom(denied.dst, 8080),
		SrcIdentity: peerID(3),
		DstIdentity: epIdentity,
		TCPFlags:    SYN,
		Length:      60,
	}
	if ev != want {
		t.Errorf("event\n %+v\nwant\n %+v", ev, want)
	}
	if d := ev.Time.Sub(start); d < -time.Second || d > 5*time.Second {
		t.Errorf("event time %s, test started %s", ev.Time, start)
	}
	if ev.DropReason.String() != "Policy denied" || ev.DropReason.Name() != "POLICY_DENIED" {
		t.Errorf("reason %q (%s)", ev.DropReason, ev.DropReason.Name())
	}
	t.Logf("event: %s", ev)

	f.expect(t, "denylist", Ingress, f.in(2, TCP, 80), DropPolicyDenyList)
	f.expect(t, "denylist again", Ingress, f.in(2, UDP, 80), DropPolicyDenyList)
	syn := f.in(1, TCP, 80)
	f.expect(t, "allowed", Ingress, syn, DropNone)
	f.expect(t, "reply", Egress, syn.reverse(SYN|ACK), DropNone)
	f.expect(t, "established", Ingress, syn.reverse(SYN|ACK).reverse(ACK), DropNone)

	c := f.counters()
	if got := c.Ingress.Dropped[DropPolicyDenied]; got != (Count{Packets: 1, Bytes: 60}) {
		t.Errorf("ingress policy denied %+v", got)
	}
	if got := c.Ingress.Dropped[DropPolicyDenyList].Packets; got != 2 {
		t.Errorf("ingress denylist drops %d, want 2", got)
	}
	if c.Ingress.Forwarded.Packets != 2 || c.Egress.Forwarded.Packets != 1 || c.Egress.Forwarded.Bytes != 60 {
		t.Errorf("forwarded %+v / %+v, want 2 ingress, 1 egress", c.Ingress.Forwarded, c.Egress.Forwarded)
	}
	if c.Dropped(DropPolicyDenyList) != 2 || c.CTCreated != 1 || c.EventsLost != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestTraceModes(t *testing.T) {
	for _, c := range []struct {
		mode         Options
		newEv, estEv int
		dropEv       int
		name         string
	}{
		{Options{}, 1, 0, 1, "new"},
		{Options{Trace: TraceAll}, 1, 1, 1, "all"},
		{Options{Trace: TraceNone}, 0, 0, 1, "none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.mode, Endpoint{ID: epID, Identity: epIdentity, EnforceIngress: true})
			syn := f.out(1, TCP, 80)
			if evs := f.expect(t, "new", Egress, syn, DropNone); len(evs) != c.newEv {
				t.Errorf("new flow: %d events, want %d", len(evs), c.newEv)
			}
			evs := f.expect(t, "reply", Ingress, syn.reverse(SYN|ACK), DropNone)
			if len(evs) != c.estEv {
				t.Errorf("reply: %d events, want %d", len(evs), c.estEv)
			} else if len(evs) == 1 && evs[0].CTState != CTReply {
				t.Errorf("reply event %v", evs[0])
			}
			if evs := f.expect(t, "drop", Ingress, f.in(1, TCP, 80), DropPolicyDenied); len(evs) != c.dropEv {
				t.Errorf("drop: %d events, want %d", len(evs), c.dropEv)
			}
		})
	}
}

// TestUntrackedEndpoint: an endpoint no policy applies to passes TCP
// without conntrack work and reports each connection by its SYN; other
// protocols stay tracked. Once enforced, its earlier connections are
// picked up only with Pickup; without, their packets are new flows.
func TestUntrackedEndpoint(t *testing.T) {
	free := Endpoint{ID: epID, Identity: epIdentity}
	f := newFixture(t, Options{}, free)
	ct := func() uint64 { return f.counters().CTCreated }

	before := ct()
	syn := f.out(1, TCP, 80)
	evs := f.expect(t, "SYN", Egress, syn, DropNone)
	if len(evs) != 1 || evs[0].CTState != CTNew || evs[0].Verdict != Forwarded {
		t.Errorf("SYN events %v, want one new forwarded trace", evs)
	}
	for _, p := range []struct {
		name string
		dir  Direction
		p    pkt
	}{
		{"SYN-ACK", Ingress, syn.reverse(SYN | ACK)},
		{"ACK", Egress, syn.reverse(SYN | ACK).reverse(ACK)},
		{"data back", Ingress, syn.reverse(ACK | PSH)},
	} {
		if evs := f.expect(t, p.name, p.dir, p.p, DropNone); len(evs) != 0 {
			t.Errorf("%s: events %v, want none", p.name, evs)
		}
	}
	inbound := f.in(2, TCP, 8080)
	if evs := f.expect(t, "inbound SYN", Ingress, inbound, DropNone); len(evs) != 1 || evs[0].CTState != CTNew {
		t.Errorf("inbound SYN events %v, want one new", evs)
	}
	if got := ct(); got != before {
		t.Errorf("TCP created %d conntrack entries, want none", got-before)
	}
	f.expect(t, "UDP", Egress, udpPkt(podAddr, peer(1), f.nextPort(), 53), DropNone)
	if got := ct(); got != before+1 {
		t.Errorf("UDP: %d conntrack entries, want 1", got-before)
	}
	c := f.counters()
	if c.Egress.Forwarded.Packets != 3 || c.Ingress.Forwarded.Packets != 3 {
		t.Errorf("forwarded egress %d, ingress %d; want 3, 3", c.Egress.Forwarded.Packets, c.Ingress.Forwarded.Packets)
	}
	// The source address check stays.
	must(t, f.dp.UpsertEndpoint(f.ifindex, Endpoint{ID: epID, Identity: epIdentity, Addr: netip.MustParseAddr(podAddr)}))
	f.expect(t, "spoofed source", Egress, tcpPkt(peer(3), peer(1), 1000, 80, SYN), DropInvalidSourceIP)

	// Enforced both ways, nothing allowed: the earlier connections' packets
	// are new flows.
	enforced := Endpoint{ID: epID, Identity: epIdentity, EnforceIngress: true, EnforceEgress: true}
	must(t, f.dp.UpsertEndpoint(f.ifindex, enforced))
	f.expect(t, "outbound data, enforced", Egress, syn.reverse(SYN|ACK).reverse(ACK|PSH), DropPolicyDenied)
	f.expect(t, "inbound data, enforced", Ingress, inbound.reverse(SYN|ACK).reverse(ACK|PSH), DropPolicyDenied)
	drain(t, f.ev)

	// With Pickup they go on, tracked from their next packet, in either
	// direction; SYNs and RSTs are still checked.
	enforced.Pickup = true
	must(t, f.dp.UpsertEndpoint(f.ifindex, enforced))
	before = f.counters().CTPickedUp
	if evs := f.expect(t, "reply of the outbound connection", Ingress, syn.reverse(ACK|PSH), DropNone); len(evs) != 0 {
		t.Errorf("picked-up packet events %v, want none", evs)
	}
	f.expect(t, "outbound data after pickup", Egress, syn.reverse(SYN|ACK).reverse(ACK|PSH), DropNone)
	f.expect(t, "inbound data", Ingress, inbound.reverse(SYN|ACK).reverse(ACK|PSH), DropNone)
	f.expect(t, "its reply", Egress, inbound.reverse(ACK|PSH), DropNone)
	if got := f.counters().CTPickedUp; got != before+2 {
		t.Errorf("picked up %d connections, want 2", got-before)
	}
	f.expect(t, "new SYN", Ingress, f.in(2, TCP, 8080), DropPolicyDenied)
	rst := f.in(2, TCP, 8080)
	rst.flags = RST | ACK
	f.expect(t, "RST of an unknown connection", Ingress, rst, DropPolicyDenied)
	// A picked-up entry does not let a connection open on its tuple: a
	// peer's stray ACK is picked up, its SYN on the same ports is a new
	// flow that policy denies.
	probe := f.in(2, TCP, 8080)
	probe.flags = ACK
	f.expect(t, "stray ACK, picked up", Ingress, probe, DropNone)
	probe.flags = SYN
	f.expect(t, "SYN on the picked-up tuple", Ingress, probe, DropPolicyDenied)

	// Track: enforcing nothing, tracked all the same.
	must(t, f.dp.UpsertEndpoint(f.ifindex, Endpoint{ID: epID, Identity: epIdentity, Track: true}))
	before = f.counters().CTCreated
	f.expect(t, "SYN, tracked", Egress, f.out(1, TCP, 80), DropNone)
	if got := f.counters().CTCreated; got != before+1 {
		t.Errorf("Track: %d conntrack entries, want 1", got-before)
	}

	// Every packet traced: tracked whatever the policy.
	g := newFixture(t, Options{Trace: TraceAll}, free)
	before = g.counters().CTCreated
	g.expect(t, "SYN, all traced", Egress, g.out(1, TCP, 80), DropNone)
	if got := g.counters().CTCreated; got != before+1 {
		t.Errorf("TraceAll: %d conntrack entries, want 1", got-before)
	}
}

// TestEventsWakeIdleReader: a reader with nothing to read waits to be
// woken (it does not poll), and the first trace written wakes it; a busy
// reader reads what gathered meanwhile, in order.
func TestEventsWakeIdleReader(t *testing.T) {
	f := newFixture(t, Options{}, Endpoint{ID: epID, Identity: epIdentity, EnforceIngress: true})
	drain(t, f.ev)
	type result struct {
		ev  FlowEvent
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		// Far beyond EventsPollInterval: only a wake-up ends the wait early.
		f.ev.SetDeadline(time.Now().Add(5 * time.Second))
		ev, err := f.ev.Read()
		got <- result{ev, err, time.Now()}
	}()
	time.Sleep(200 * time.Millisecond) // the reader waits by now
	sent := time.Now()
	first := f.out(1, TCP, 80)
	if r := f.run(Egress, f.ifindex, first.frame()); !r.passed() {
		t.Fatalf("returned %d, want pass", int32(r.ret))
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if d := r.at.Sub(sent); d > time.Second {
		t.Errorf("the trace reached the waiting reader after %s: it was not woken", d)
	}
	if r.ev.Dst.Port() != 80 || r.ev.Src.Port() != first.sport || r.ev.Verdict != Forwarded {
		t.Errorf("event %v, want the trace of %v", r.ev, first)
	}
	// Busy: the next events gather while the reader sleeps, then come
	// together, oldest first.
	var sports []uint16
	for range 3 {
		p := f.out(1, TCP, 80)
		if r := f.run(Egress, f.ifindex, p.frame()); !r.passed() {
			t.Fatalf("returned %d, want pass", int32(r.ret))
		}
		sports = append(sports, p.sport)
	}
	for _, want := range sports {
		f.ev.SetDeadline(time.Now().Add(5 * time.Second))
		ev, err := f.ev.Read()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Src.Port() != want {
			t.Errorf("event from port %d, want %d", ev.Src.Port(), want)
		}
	}
}

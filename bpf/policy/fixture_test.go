package policy

import (
	"fmt"
	"net/netip"
	"testing"
)

// The endpoint most BPF_PROG_RUN tests police, and its peers: peer(n) is
// 10.1.0.n with identity 1000+n.
const (
	epID       EndpointID = 7
	epIdentity Identity   = 5000
	podAddr               = "10.244.0.10"
)

func peer(n int) string             { return fmt.Sprintf("10.1.0.%d", n) }
func peerID(n int) Identity         { return Identity(1000 + n) }
func peerPrefix(n int) netip.Prefix { return netip.PrefixFrom(netip.MustParseAddr(peer(n)), 32) }

// fixture is an env with the endpoint on a veth, the peers in the ipcache
// and the event reader open.
type fixture struct {
	*testEnv
	ifindex int
	ev      *EventReader
	port    uint16
}

func newFixture(tb testing.TB, opts Options, ep Endpoint) *fixture {
	tb.Helper()
	e := newEnv(tb, opts)
	f := &fixture{testEnv: e, ifindex: e.veth("mbr0"), port: 30000}
	for n := 1; n <= 9; n++ {
		must(tb, e.dp.UpsertIPCache(peerPrefix(n), peerID(n)))
	}
	must(tb, e.dp.UpsertIPCache(prefix(podAddr+"/32"), epIdentity))
	if ep.ID == 0 {
		ep = Endpoint{ID: epID, Identity: epIdentity, EnforceIngress: true, EnforceEgress: true}
	}
	must(tb, e.dp.UpsertEndpoint(f.ifindex, ep))
	f.ev = e.events()
	return f
}

// nextPort is a source port no earlier packet used: a new flow.
func (f *fixture) nextPort() uint16 {
	f.port++
	return f.port
}

// in is a new flow from peer n to the pod; out from the pod to peer n.
func (f *fixture) in(n int, proto Proto, dport uint16) pkt {
	return pkt{src: netip.MustParseAddr(peer(n)), dst: netip.MustParseAddr(podAddr), proto: proto, sport: f.nextPort(), dport: dport, flags: SYN}
}

func (f *fixture) out(n int, proto Proto, dport uint16) pkt {
	return pkt{src: netip.MustParseAddr(podAddr), dst: netip.MustParseAddr(peer(n)), proto: proto, sport: f.nextPort(), dport: dport, flags: SYN}
}

// expect runs p through direction dir's program, checks it passed or went
// to the L7 proxy (want DropNone) or was dropped for want, and returns the
// events it caused.
func (f *fixture) expect(tb testing.TB, what string, dir Direction, p pkt, want DropReason) []FlowEvent {
	tb.Helper()
	r := f.run(dir, f.ifindex, p.frame())
	evs := drain(tb, f.ev)
	switch {
	case want == DropNone && !r.passed() && !r.redirected():
		tb.Errorf("%s: returned %d, want pass (events %v)", what, int32(r.ret), evs)
	case want != DropNone && !r.dropped():
		tb.Errorf("%s: returned %d, want drop (%s)", what, int32(r.ret), want)
	case want != DropNone:
		if len(evs) == 0 || evs[len(evs)-1].DropReason != want {
			tb.Errorf("%s: events %v, want a drop for %q", what, evs, want)
		}
	}
	return evs
}

package datapath

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// fakeMaps is Maps in memory; it records every write in order.
type fakeMaps struct {
	dump     bpfpolicy.Dump
	attached []int
	calls    []string
	fail     string // a call (by name) that fails
	// last holds the endpoint each interface got last.
	last map[int]bpfpolicy.Endpoint
}

func (f *fakeMaps) call(c string) error {
	f.calls = append(f.calls, c)
	if f.fail != "" && c == f.fail {
		return errors.New("injected failure: " + c)
	}
	return nil
}

func (f *fakeMaps) UpsertIPCache(p netip.Prefix, id bpfpolicy.Identity) error {
	return f.call(fmt.Sprintf("ipcache %s=%d", p, id))
}
func (f *fakeMaps) DeleteIPCache(p netip.Prefix) error { return f.call("ipcache -" + p.String()) }
func (f *fakeMaps) UpsertEndpoint(ifindex int, ep bpfpolicy.Endpoint) error {
	if f.last == nil {
		f.last = map[int]bpfpolicy.Endpoint{}
	}
	f.last[ifindex] = ep
	return f.call(fmt.Sprintf("endpoint %d id=%d in=%v eg=%v", ifindex, ep.ID, ep.EnforceIngress, ep.EnforceEgress))
}
func (f *fakeMaps) DeleteEndpoint(ifindex int) error {
	return f.call(fmt.Sprintf("endpoint -%d", ifindex))
}
func (f *fakeMaps) UpsertLocalRoute(addr netip.Addr, r bpfpolicy.LocalRoute) error {
	return f.call(fmt.Sprintf("route %s=%d %s %s", addr, r.Ifindex, r.PodMAC, r.HostMAC))
}
func (f *fakeMaps) DeleteLocalRoute(addr netip.Addr) error { return f.call("route -" + addr.String()) }
func (f *fakeMaps) SetEndpointPolicy(id bpfpolicy.EndpointID, rules []bpfpolicy.Rule) error {
	return f.call(fmt.Sprintf("policy %d rules=%d", id, len(rules)))
}
func (f *fakeMaps) Revise() error                 { return f.call("revise") }
func (f *fakeMaps) Attach(ifindex int) error      { return f.call(fmt.Sprintf("attach %d", ifindex)) }
func (f *fakeMaps) Detach(ifindex int) error      { return f.call(fmt.Sprintf("detach %d", ifindex)) }
func (f *fakeMaps) Attached() ([]int, error)      { return f.attached, nil }
func (f *fakeMaps) Dump() (bpfpolicy.Dump, error) { return f.dump, nil }

// takeCalls returns the calls since the last time and forgets them.
func (f *fakeMaps) takeCalls() []string {
	c := f.calls
	f.calls = nil
	return c
}

func newWriter(t *testing.T, f *fakeMaps) *Writer {
	t.Helper()
	w, err := New(slog.New(slog.NewTextHandler(io.Discard, nil)), f)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

var allow = []policy.DatapathRule{{Direction: policy.Ingress, RemoteIdentity: 300, Proto: policy.TCP, Port: 80, Verdict: policy.Allow}}

func TestProgramOrder(t *testing.T) {
	f := &fakeMaps{}
	w := newWriter(t, f)
	ip := netip.MustParseAddr("10.244.0.5")
	ep := Endpoint{Addr: ip, Identity: 300, EnforceIngress: true, Rules: allow}
	id, err := w.Program(7, ep)
	if err != nil || id != 1 {
		t.Fatalf("Program: id %d, %v; want 1", id, err)
	}
	// Growing enforcement: rules before flags, then attach.
	want := []string{"policy 1 rules=1", "endpoint 7 id=1 in=true eg=false", "attach 7"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("new endpoint (-want +got):\n%s", d)
	}
	if _, err := w.Program(7, ep); err != nil {
		t.Fatal(err)
	}
	if c := f.takeCalls(); len(c) != 0 {
		t.Errorf("unchanged endpoint written again: %v", c)
	}
	// Shrinking enforcement: flags before rules; attached already.
	ep.EnforceIngress, ep.Rules = false, nil
	if _, err := w.Program(7, ep); err != nil {
		t.Fatal(err)
	}
	want = []string{"endpoint 7 id=1 in=false eg=false", "policy 1 rules=0"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("shrinking (-want +got):\n%s", d)
	}
	// A failed write is tried again next time.
	f.fail = "policy 1 rules=1"
	ep.EnforceIngress, ep.Rules = true, allow
	if _, err := w.Program(7, ep); err == nil {
		t.Error("failed write not reported")
	}
	f.fail = ""
	f.takeCalls()
	if _, err := w.Program(7, ep); err != nil {
		t.Fatal(err)
	}
	if c := f.takeCalls(); !slices.Contains(c, "policy 1 rules=1") {
		t.Errorf("failed write not retried: %v", c)
	}
	// Only the rules change: the endpoint's entry stays.
	ep.Rules = append(slices.Clone(allow), policy.DatapathRule{Direction: policy.Ingress, RemoteIdentity: 301, Proto: policy.TCP, Port: 81, Verdict: policy.Allow})
	if _, err := w.Program(7, ep); err != nil {
		t.Fatal(err)
	}
	want = []string{"policy 1 rules=2"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("rules changed (-want +got):\n%s", d)
	}
	// After a failed write of the entry, it is written (and the programs
	// attached) again even when the endpoint it had comes back.
	f.fail = "endpoint 7 id=1 in=true eg=true"
	ep.EnforceEgress = true
	if _, err := w.Program(7, ep); err == nil {
		t.Error("failed write not reported")
	}
	f.fail = ""
	f.takeCalls()
	ep.EnforceEgress = false
	if _, err := w.Program(7, ep); err != nil {
		t.Fatal(err)
	}
	want = []string{"policy 1 rules=2", "endpoint 7 id=1 in=true eg=false", "attach 7"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("after the failed write (-want +got):\n%s", d)
	}
}

func TestProgramInit(t *testing.T) {
	f := &fakeMaps{}
	w := newWriter(t, f)
	ip := netip.MustParseAddr("10.244.0.5")
	id, err := w.ProgramInit(7, ip)
	if err != nil || id != 1 {
		t.Fatalf("ProgramInit: id %d, %v; want 1", id, err)
	}
	want := []string{"policy 1 rules=0", "endpoint 7 id=1 in=true eg=true", "attach 7"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("init endpoint (-want +got):\n%s", d)
	}
	if p, _ := w.Programmed(7); p.Endpoint.Identity != bpfpolicy.IdentityInit {
		t.Errorf("identity %d, want init", p.Endpoint.Identity)
	}
	if got := w.Init(); len(got) != 1 || got[7] != ip {
		t.Errorf("Init %v, want 7: %s", got, ip)
	}
	// Programmed for real: same ID, rules before the identity leaves init.
	if id, err := w.Program(7, Endpoint{Addr: ip, Identity: 300, EnforceIngress: true, EnforceEgress: true, Rules: allow}); err != nil || id != 1 {
		t.Fatalf("Program: id %d, %v; want 1", id, err)
	}
	want = []string{"policy 1 rules=1", "endpoint 7 id=1 in=true eg=true"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("init to real (-want +got):\n%s", d)
	}
	if len(w.Init()) != 0 {
		t.Errorf("Init %v after Program, want none", w.Init())
	}
	// A late ProgramInit (the CNI retried) does not undo the real policy.
	if _, err := w.ProgramInit(7, ip); err != nil {
		t.Fatal(err)
	}
	if c := f.takeCalls(); len(c) != 0 {
		t.Errorf("ProgramInit of a programmed endpoint wrote %v", c)
	}
}

// TestPickupWindow: an endpoint programmed untracked that policy then
// applies to picks up its earlier TCP connections for PickupWindow, and no
// longer once a regeneration after the window rewrites it; one tracked
// from the start never does; a restarted agent gives one that was picking
// up a new window.
func TestPickupWindow(t *testing.T) {
	f := &fakeMaps{}
	w := newWriter(t, f)
	now := time.Unix(1000, 0)
	w.now = func() time.Time { return now }
	ip := netip.MustParseAddr("10.244.0.5")
	free := Endpoint{Addr: ip, Identity: 300}
	enforced := Endpoint{Addr: ip, Identity: 300, EnforceIngress: true, Rules: allow}
	program := func(ifindex int, ep Endpoint) bpfpolicy.Endpoint {
		t.Helper()
		if _, err := w.Program(ifindex, ep); err != nil {
			t.Fatal(err)
		}
		return f.last[ifindex]
	}
	if got := program(7, free); got.Pickup || got.Tracked() {
		t.Fatalf("untracked endpoint written as %+v", got)
	}
	if got := program(7, enforced); !got.Pickup {
		t.Errorf("newly enforced endpoint without pickup: %+v", got)
	}
	now = now.Add(PickupWindow - time.Second)
	f.takeCalls()
	if program(7, enforced); len(f.takeCalls()) != 0 {
		t.Error("endpoint rewritten within its pickup window")
	}
	now = now.Add(2 * time.Second)
	if got := program(7, enforced); got.Pickup || !got.EnforceIngress {
		t.Errorf("after the window: %+v, want enforced without pickup", got)
	}
	now = now.Add(time.Hour)
	f.takeCalls()
	if program(7, enforced); len(f.takeCalls()) != 0 {
		t.Error("the window opened again")
	}
	if got := program(8, enforced); got.Pickup {
		t.Errorf("endpoint tracked from the start picks up: %+v", got)
	}

	// Restart: the maps show endpoint 7 picking up.
	f2 := &fakeMaps{dump: bpfpolicy.Dump{Endpoints: []bpfpolicy.EndpointEntry{{Ifindex: 7, Endpoint: bpfpolicy.Endpoint{ID: 1, Identity: 300, Addr: ip, EnforceIngress: true, Pickup: true}}}}}
	w = newWriter(t, f2)
	if got := func() bpfpolicy.Endpoint { _, _ = w.Program(7, enforced); return f2.last[7] }(); !got.Pickup {
		t.Errorf("restored endpoint lost its pickup window: %+v", got)
	}
}

// TestTrackAfterRedirects: an endpoint whose redirects to the proxy go
// away stays tracked, so its redirected connections keep going; one that
// never had any becomes untracked.
func TestTrackAfterRedirects(t *testing.T) {
	f := &fakeMaps{}
	w := newWriter(t, f)
	l7 := []policy.DatapathRule{{Direction: policy.Ingress, RemoteIdentity: 300, Proto: policy.TCP, Port: 80, Verdict: policy.Redirect, ProxyPort: 15001}}
	for _, c := range []struct {
		ifindex int
		rules   []policy.DatapathRule
		track   bool
	}{{7, l7, true}, {8, allow, false}} {
		ip := netip.AddrFrom4([4]byte{10, 244, 0, byte(c.ifindex)})
		if _, err := w.Program(c.ifindex, Endpoint{Addr: ip, Identity: 300, EnforceIngress: true, Rules: c.rules}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Program(c.ifindex, Endpoint{Addr: ip, Identity: 300}); err != nil {
			t.Fatal(err)
		}
		if got := f.last[c.ifindex]; got.Track != c.track || got.EnforceIngress {
			t.Errorf("ifindex %d after its policy went: %+v, want Track %v", c.ifindex, got, c.track)
		}
	}
}

func TestEndpointIDs(t *testing.T) {
	a := netip.MustParseAddr
	// Restored from pinned maps: interface 7 held endpoint 4.
	f := &fakeMaps{dump: bpfpolicy.Dump{Endpoints: []bpfpolicy.EndpointEntry{{Ifindex: 7, Endpoint: bpfpolicy.Endpoint{ID: 4, Identity: 300, Addr: a("10.244.0.5")}}}}}
	w := newWriter(t, f)
	// Its rules are not restored: they are written again, and the
	// programs attached again once.
	if id, err := w.Program(7, Endpoint{Addr: a("10.244.0.5"), Identity: 300, EnforceIngress: true, Rules: allow}); err != nil || id != 4 {
		t.Errorf("restored endpoint: id %d, %v; want its ID 4 kept", id, err)
	}
	if d := cmp.Diff([]string{"policy 4 rules=1", "endpoint 7 id=4 in=true eg=false", "attach 7"}, f.takeCalls()); d != "" {
		t.Errorf("restored endpoint (-want +got):\n%s", d)
	}
	if id, _ := w.Program(8, Endpoint{Addr: a("10.244.0.6"), Identity: 300}); id != 1 {
		t.Errorf("new endpoint: id %d, want the lowest free, 1", id)
	}
	// Another pod on interface 7: a new ID, the old one's policy cleared.
	id, err := w.Program(7, Endpoint{Addr: a("10.244.0.9"), Identity: 301})
	if err != nil || id != 2 {
		t.Errorf("new pod on an old interface: id %d, %v; want 2", id, err)
	}
	if c := f.takeCalls(); !slices.Contains(c, "policy 4 rules=0") {
		t.Errorf("old endpoint's policy not cleared: %v", c)
	}
	if p, ok := w.Programmed(7); !ok || p.Endpoint.ID != 2 || p.Endpoint.Identity != 301 {
		t.Errorf("Programmed(7) = %+v, %v", p, ok)
	}
}

func TestSetIPCache(t *testing.T) {
	p := netip.MustParsePrefix
	f := &fakeMaps{dump: bpfpolicy.Dump{IPCache: []bpfpolicy.IPCacheEntry{
		{Prefix: p("0.0.0.0/0"), Identity: bpfpolicy.IdentityWorld},
		{Prefix: p("10.244.0.5/32"), Identity: 300},
		{Prefix: p("10.244.0.6/32"), Identity: 301},
	}}}
	w := newWriter(t, f)
	errs := w.SetIPCache(ipcache.Map{p("0.0.0.0/0"): identity.World, p("10.244.0.5/32"): 302, p("10.244.0.7/32"): 303})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	got := f.takeCalls()
	slices.Sort(got)
	want := []string{"ipcache -10.244.0.6/32", "ipcache 10.244.0.5/32=302", "ipcache 10.244.0.7/32=303"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ipcache diff (-want +got):\n%s", d)
	}
}

func TestPrune(t *testing.T) {
	a := netip.MustParseAddr
	f := &fakeMaps{attached: []int{7, 8, 99}}
	w := newWriter(t, f)
	for i, ifindex := range []int{7, 8} {
		if _, err := w.Program(ifindex, Endpoint{Addr: a(fmt.Sprintf("10.244.0.%d", i+5)), Identity: 300}); err != nil {
			t.Fatal(err)
		}
	}
	f.takeCalls()
	if errs := w.Prune(map[int]bool{7: true}, false); len(errs) != 0 {
		t.Fatal(errs)
	}
	want := []string{"endpoint -8", "policy 2 rules=0", "detach 8"}
	if d := cmp.Diff(want, f.takeCalls()); d != "" {
		t.Errorf("prune (-want +got):\n%s", d)
	}
	if _, ok := w.Programmed(8); ok {
		t.Error("pruned endpoint still programmed")
	}
	// A sweep detaches leftovers on interfaces nobody programmed.
	f.attached = []int{7, 99}
	if errs := w.Prune(map[int]bool{7: true}, true); slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		t.Fatal(errs)
	}
	if d := cmp.Diff([]string{"detach 99"}, f.takeCalls()); d != "" {
		t.Errorf("sweep (-want +got):\n%s", d)
	}
}

func TestRules(t *testing.T) {
	in := []policy.DatapathRule{
		{Direction: policy.Ingress, RemoteIdentity: identity.ID(258), Proto: policy.TCP, Port: 8080, Verdict: policy.Allow},
		{Direction: policy.Egress, Proto: policy.UDP, Port: 53, EndPort: 54, Verdict: policy.Deny},
		{Direction: policy.Ingress, RemoteIdentity: 1, Verdict: policy.Redirect, ProxyPort: 15001, AuthRequired: true},
	}
	want := []bpfpolicy.Rule{
		{Key: bpfpolicy.PolicyKey{Direction: bpfpolicy.Ingress, RemoteIdentity: 258, Proto: bpfpolicy.TCP, Port: 8080}, Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Allow}},
		{Key: bpfpolicy.PolicyKey{Direction: bpfpolicy.Egress, Proto: bpfpolicy.UDP, Port: 53, EndPort: 54}, Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Deny}},
		{Key: bpfpolicy.PolicyKey{Direction: bpfpolicy.Ingress, RemoteIdentity: bpfpolicy.IdentityHost}, Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Redirect, ProxyPort: 15001, AuthRequired: true}},
	}
	got := Rules(in)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("rule %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestLocalRoutes: an interface whose link is known gets a local route
// with its endpoint; pruning it removes the route, unless its address went
// on to another interface meanwhile.
func TestLocalRoutes(t *testing.T) {
	f := &fakeMaps{}
	w := newWriter(t, f)
	ip := netip.MustParseAddr("10.244.0.5")
	host, pod := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	if _, err := w.Program(6, Endpoint{Addr: netip.MustParseAddr("10.244.0.6"), Identity: 300}); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.takeCalls() {
		if strings.HasPrefix(c, "route") {
			t.Errorf("route written without the link's MACs: %s", c)
		}
	}
	w.SetLink(7, host, pod)
	if _, err := w.ProgramInit(7, ip); err != nil {
		t.Fatal(err)
	}
	if c := f.takeCalls(); !slices.Contains(c, "route 10.244.0.5=7 02:00:00:00:00:02 02:00:00:00:00:01") {
		t.Errorf("calls %v, want the route to 10.244.0.5 through 7", c)
	}
	if _, err := w.Program(7, Endpoint{Addr: ip, Identity: 300}); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.takeCalls() {
		if strings.HasPrefix(c, "route") {
			t.Errorf("unchanged route written again: %s", c)
		}
	}
	// The address moves to a new interface before the old one is pruned.
	w.SetLink(8, host, pod)
	if _, err := w.ProgramInit(8, ip); err != nil {
		t.Fatal(err)
	}
	f.takeCalls()
	w.Prune(map[int]bool{6: true, 8: true}, false)
	if c := f.takeCalls(); slices.Contains(c, "route -10.244.0.5") {
		t.Errorf("pruning 7 removed the route through 8: %v", c)
	}
	w.Prune(map[int]bool{6: true}, false)
	if c := f.takeCalls(); !slices.Contains(c, "route -10.244.0.5") {
		t.Errorf("pruning 8: calls %v, want its route removed", c)
	}
	// Restored from the maps: pruned like any other.
	f2 := &fakeMaps{dump: bpfpolicy.Dump{Routes: []bpfpolicy.LocalRouteEntry{{Addr: ip, Route: bpfpolicy.LocalRoute{Ifindex: 9, HostMAC: host, PodMAC: pod}}}}}
	w2 := newWriter(t, f2)
	w2.Prune(map[int]bool{}, false)
	if c := f2.takeCalls(); !slices.Contains(c, "route -10.244.0.5") {
		t.Errorf("restored route: calls %v, want it removed", c)
	}
}

// TestRulesConvertedOnce: endpoints sharing a rule list share its
// conversion until a Prune passes without it; another list (even of the
// same length) is converted on its own.
func TestRulesConvertedOnce(t *testing.T) {
	f := &fakeMaps{}
	w := newWriter(t, f)
	shared := slices.Clone(allow)
	for i := range 3 {
		ep := Endpoint{Addr: netip.AddrFrom4([4]byte{10, 244, 0, byte(5 + i)}), Identity: 300, EnforceIngress: true, Rules: shared}
		if _, err := w.Program(7+i, ep); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.converted) != 1 {
		t.Fatalf("%d conversions for one shared list", len(w.converted))
	}
	a, _ := w.Programmed(7)
	b, _ := w.Programmed(9)
	if &a.Rules[0] != &b.Rules[0] {
		t.Error("endpoints of one list got separate conversions")
	}
	other := slices.Clone(allow)
	other[0].Port = 81
	if _, err := w.Program(7, Endpoint{Addr: netip.MustParseAddr("10.244.0.5"), Identity: 300, EnforceIngress: true, Rules: other}); err != nil {
		t.Fatal(err)
	}
	if p, _ := w.Programmed(7); p.Rules[0].Key.Port != 81 {
		t.Errorf("another list of the same length: %+v", p.Rules)
	}
	keep := map[int]bool{7: true, 8: true, 9: true}
	w.Prune(keep, false) // both used since the last Prune
	if len(w.converted) != 2 {
		t.Fatalf("%d conversions after the first Prune, want 2", len(w.converted))
	}
	if _, err := w.Program(7, Endpoint{Addr: netip.MustParseAddr("10.244.0.5"), Identity: 300, EnforceIngress: true, Rules: other}); err != nil {
		t.Fatal(err)
	}
	w.Prune(keep, false)
	if len(w.converted) != 1 {
		t.Errorf("%d conversions after a Prune without the shared list's use, want 1", len(w.converted))
	}
}

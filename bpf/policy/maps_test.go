package policy

import (
	"errors"
	"net/netip"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

func policyOf(tb testing.TB, m *Maps, id EndpointID) []PolicyMapEntry {
	tb.Helper()
	d, err := m.Dump()
	must(tb, err)
	var out []PolicyMapEntry
	for _, e := range d.Policy {
		if e.Key.EndpointID == id {
			out = append(out, e)
		}
	}
	return out
}

func TestSetEndpointPolicy(t *testing.T) {
	e := newEnv(t, Options{})
	allow := PolicyEntry{Verdict: Allow}
	rules := []Rule{
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 1, EndPort: 65535}, Entry: allow},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 443}, Entry: allow},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 8000, EndPort: 8999}, Entry: PolicyEntry{Verdict: Deny}},
		{Key: PolicyKey{Direction: Egress, Proto: AnyProto, Port: 53}, Entry: allow},
		{Key: PolicyKey{Direction: Egress, RemoteIdentity: 7}, Entry: PolicyEntry{Verdict: Allow, AuthRequired: true}},
		{Key: PolicyKey{Direction: Egress, RemoteIdentity: 7, Proto: UDP, Port: 99}, Entry: allow},
	}
	must(t, e.dp.SetEndpointPolicy(1, rules))
	got := policyOf(t, e.dp.Maps, 1)
	// 1-65535 is 16 blocks (443 is one of its ports, an entry of its own);
	// 8000-8999 is 6 blocks; any protocol with a port is TCP, UDP, SCTP.
	if n := len(got); n != 16+1+6+3+2 {
		t.Errorf("%d map entries, want 28: %+v", n, got)
	}
	for _, pe := range got {
		k := pe.Key
		switch {
		case k.Direction == Ingress && k.Port >= 8000 && k.EndPort <= 8999 && pe.Entry.Verdict != Deny:
			t.Errorf("%s: own verdict %s inside the deny range", k, pe.Entry)
		case k.Direction == Ingress && k.Port == 443:
			if pe.DerivedDeny || pe.Entry != allow {
				t.Errorf("443: %+v", pe)
			}
		case k.Direction == Ingress && k.Port == 8192 && k.EndPort == 16383:
			// The block of 1-65535 covering 8000-8999 is less specific
			// than the deny: it stays an allow; the deny entries win the
			// longest match.
			if pe.DerivedDeny {
				t.Errorf("8192-16383 marked denied: %+v", pe)
			}
		case k.Direction == Egress && k.RemoteIdentity == 7 && k.Proto == UDP:
			if !pe.DerivedAuth || pe.Entry.AuthRequired {
				t.Errorf("UDP/99 of identity 7 under an auth-requiring L3 entry: %+v", pe)
			}
		}
	}

	// Unchanged rules write nothing. Remove an entry behind the Maps'
	// back: an unchanged SetEndpointPolicy does not notice, a new Maps
	// (an agent restart) reads the map and repairs it.
	k := rules[1].Key.mapKeys(1)[0]
	must(t, e.dp.policy.Delete(&k))
	must(t, e.dp.SetEndpointPolicy(1, rules))
	if n := len(policyOf(t, e.dp.Maps, 1)); n != 27 {
		t.Errorf("after an unchanged set: %d entries, want 27 (nothing rewritten)", n)
	}
	dp2 := e.load()
	must(t, dp2.SetEndpointPolicy(1, rules))
	if n := len(policyOf(t, dp2.Maps, 1)); n != 28 {
		t.Errorf("after a restart: %d entries, want 28", n)
	}
	// A restarted agent diffs against the map: stale entries go.
	must(t, dp2.SetEndpointPolicy(1, rules[3:4]))
	if got := policyOf(t, dp2.Maps, 1); len(got) != 3 {
		t.Errorf("after shrinking: %+v, want the 3 port-53 entries", got)
	}

	// Other endpoints are left alone.
	must(t, dp2.SetEndpointPolicy(2, rules))
	must(t, dp2.SetEndpointPolicy(2, nil))
	if n := len(policyOf(t, dp2.Maps, 1)); n != 3 {
		t.Errorf("endpoint 1: %d entries after changing endpoint 2", n)
	}

	// Invalid input changes nothing.
	before, err := dp2.Dump()
	must(t, err)
	for name, bad := range map[string][]Rule{
		"end below port":    {{Key: PolicyKey{Direction: Ingress, Proto: TCP, Port: 90, EndPort: 80}, Entry: allow}},
		"end without port":  {{Key: PolicyKey{Direction: Ingress, Proto: TCP, EndPort: 80}, Entry: allow}},
		"direction":         {{Key: PolicyKey{Direction: 2}, Entry: allow}},
		"other endpoint":    {{Key: PolicyKey{EndpointID: 9}, Entry: allow}},
		"no verdict":        {{Key: PolicyKey{}}},
		"redirect, no port": {{Key: PolicyKey{Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Redirect}}},
		"port, no redirect": {{Key: PolicyKey{Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Allow, ProxyPort: 1}}},
		"deny with auth":    {{Key: PolicyKey{}, Entry: PolicyEntry{Verdict: Deny, AuthRequired: true}}},
		"two proxy ports": {
			{Key: PolicyKey{Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Redirect, ProxyPort: 1}},
			{Key: PolicyKey{Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Redirect, ProxyPort: 2}},
		},
	} {
		if err := dp2.SetEndpointPolicy(1, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := dp2.SetEndpointPolicy(0, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("endpoint 0: %v", err)
	}
	after, err := dp2.Dump()
	must(t, err)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("rejected sets changed the maps")
	}

	// Overlapping rules combine: deny wins, redirect beats allow, auth ORs.
	must(t, dp2.SetEndpointPolicy(3, []Rule{
		{Key: PolicyKey{Proto: TCP, Port: 80}, Entry: allow},
		{Key: PolicyKey{Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Redirect, ProxyPort: 7}},
		{Key: PolicyKey{Proto: TCP, Port: 80, EndPort: 81}, Entry: PolicyEntry{Verdict: Allow, AuthRequired: true}},
		{Key: PolicyKey{Proto: TCP, Port: 90}, Entry: allow},
		{Key: PolicyKey{Proto: TCP, Port: 90}, Entry: PolicyEntry{Verdict: Deny}},
	}))
	want := []PolicyMapEntry{
		{Key: PolicyKey{EndpointID: 3, Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Redirect, ProxyPort: 7}, DerivedAuth: true},
		{Key: PolicyKey{EndpointID: 3, Proto: TCP, Port: 80, EndPort: 81}, Entry: PolicyEntry{Verdict: Allow, AuthRequired: true}},
		{Key: PolicyKey{EndpointID: 3, Proto: TCP, Port: 90}, Entry: PolicyEntry{Verdict: Deny}},
	}
	if got := policyOf(t, dp2.Maps, 3); !reflect.DeepEqual(got, want) {
		t.Errorf("combined entries\n %+v\nwant\n %+v", got, want)
	}
}

func TestUpsertDeletePolicy(t *testing.T) {
	e := newEnv(t, Options{})
	l4 := PolicyKey{EndpointID: 4, Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 80}
	l3 := PolicyKey{EndpointID: 4, Direction: Ingress, RemoteIdentity: 1001}
	must(t, e.dp.UpsertPolicy(l4, PolicyEntry{Verdict: Allow}))
	must(t, e.dp.UpsertPolicy(l3, PolicyEntry{Verdict: Deny}))
	got := policyOf(t, e.dp.Maps, 4)
	if len(got) != 2 || !got[1].DerivedDeny || got[1].Key != l4 {
		t.Errorf("after the L3 deny: %+v, want the L4 entry derived-denied", got)
	}
	must(t, e.dp.DeletePolicy(l3))
	got = policyOf(t, e.dp.Maps, 4)
	if len(got) != 1 || got[0].DerivedDeny {
		t.Errorf("after deleting the deny: %+v", got)
	}
	must(t, e.dp.DeletePolicy(l3)) // missing is fine
	if err := e.dp.UpsertPolicy(PolicyKey{Proto: TCP, Port: 80}, PolicyEntry{Verdict: Allow}); !errors.Is(err, ErrInvalid) {
		t.Errorf("endpoint 0: %v", err)
	}
	usage, err := e.dp.Count()
	must(t, err)
	for _, u := range usage {
		if u.Name == "membrane_policy" && (u.Entries != 1 || u.MaxEntries != int(e.opts.MaxPolicy)) {
			t.Errorf("usage %+v", u)
		}
	}
}

// TestNoDenyWindow swaps between two policies that both allow a flow while
// another goroutine keeps opening such flows: additions are written before
// deletions, so none is ever denied.
func TestNoDenyWindow(t *testing.T) {
	f := newFixture(t, Options{Trace: TraceNone}, Endpoint{})
	in := func(port, end uint16) PolicyKey {
		return PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1), Proto: TCP, Port: port, EndPort: end}
	}
	allow := PolicyEntry{Verdict: Allow}
	a := []Rule{{Key: PolicyKey{Direction: Ingress, RemoteIdentity: peerID(1)}, Entry: allow}, {Key: in(81, 90), Entry: PolicyEntry{Verdict: Deny}}}
	b := []Rule{{Key: in(80, 0), Entry: allow}, {Key: PolicyKey{Direction: Ingress, Proto: TCP, Port: 1, EndPort: 79}, Entry: allow}}
	must(t, f.dp.SetEndpointPolicy(epID, a))

	var stop atomic.Bool
	var runs, drops atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- netns.Do(f.netns, func() error {
			var port uint16 = 1
			for !stop.Load() {
				port++
				p := f.in(1, TCP, 80)
				p.sport = port // new flow every time
				ret, err := f.dp.progs.PolicyToPod.Run(&ebpf.RunOptions{Data: p.frame(), Context: skbCtx{Ifindex: uint32(f.ifindex)}})
				if err != nil {
					return err
				}
				runs.Add(1)
				if ret != retNext {
					drops.Add(1)
				}
			}
			return nil
		})
	}()
	for i := range 400 {
		rules := a
		if i%2 == 0 {
			rules = b
		}
		must(t, f.dp.SetEndpointPolicy(epID, rules))
	}
	stop.Store(true)
	must(t, <-done)
	t.Logf("%d new flows checked during 400 policy swaps", runs.Load())
	if d := drops.Load(); d != 0 {
		t.Errorf("%d of %d flows allowed before and after a swap were dropped during it", d, runs.Load())
	}
}

// TestPinnedMapsReused covers what the CLI and a restarted agent see.
func TestPinnedMapsReused(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.dp.UpsertIPCache(prefix("10.1.0.0/16"), 300))
	must(t, e.dp.UpsertEndpoint(5, Endpoint{ID: 2, Identity: 400, EnforceIngress: true}))
	must(t, e.dp.SetEndpointPolicy(2, []Rule{{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 300, Proto: TCP, Port: 80}, Entry: PolicyEntry{Verdict: Allow}}}))
	want, err := e.dp.Dump()
	must(t, err)

	m, err := OpenPinned(e.pinDir)
	must(t, err)
	got, err := m.Dump()
	must(t, err)
	must(t, m.Close())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OpenPinned dump %+v, want %+v", got, want)
	}
	restarted := e.load()
	got, err = restarted.Dump()
	must(t, err)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dump after restart %+v, want %+v", got, want)
	}

	// Other map sizes do not fit the pinned maps: refuse.
	opts := e.opts
	opts.MaxConntrack = 1024
	if _, err := Load(t.Context(), testLogger(t), opts); !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Errorf("load with another MaxConntrack: %v, want ErrMapIncompatible", err)
	}
}

// TestLookupPolicy: exact keys are found, also by a reader that opened the
// pinned maps before the writer changed them; keys only covered by a
// shorter prefix are not.
func TestLookupPolicy(t *testing.T) {
	e := newEnv(t, Options{})
	reader, err := OpenPinned(e.pinDir)
	must(t, err)
	t.Cleanup(func() { _ = reader.Close() })

	allow := PolicyEntry{Verdict: Allow}
	redirect := PolicyEntry{Verdict: Redirect, ProxyPort: 15001}
	rules := []Rule{
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 443}, Entry: allow},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 8000, EndPort: 8999}, Entry: redirect},
		{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1002}, Entry: allow},
		{Key: PolicyKey{Direction: Egress, Proto: AnyProto, Port: 53}, Entry: allow},
	}
	must(t, e.dp.SetEndpointPolicy(1, rules))

	in := func(id Identity, proto Proto, port, end uint16) PolicyKey {
		return PolicyKey{EndpointID: 1, Direction: Ingress, RemoteIdentity: id, Proto: proto, Port: port, EndPort: end}
	}
	for _, tc := range []struct {
		name  string
		key   PolicyKey
		found bool
		want  PolicyEntry
	}{
		{"exact port", in(1001, TCP, 443, 0), true, allow},
		{"other port", in(1001, TCP, 444, 0), false, PolicyEntry{}},
		{"other protocol", in(1001, UDP, 443, 0), false, PolicyEntry{}},
		{"port range", in(1001, TCP, 8000, 8999), true, redirect},
		{"port inside a range", in(1001, TCP, 8000, 0), false, PolicyEntry{}},
		{"part of a range", in(1001, TCP, 8000, 8500), false, PolicyEntry{}},
		{"L3 entry", in(1002, AnyProto, 0, 0), true, allow},
		{"port under an L3 entry", in(1002, TCP, 80, 0), false, PolicyEntry{}},
		{"other identity", in(1003, TCP, 443, 0), false, PolicyEntry{}},
		{"any protocol", PolicyKey{EndpointID: 1, Direction: Egress, Proto: AnyProto, Port: 53}, true, allow},
		{"one of any protocol", PolicyKey{EndpointID: 1, Direction: Egress, Proto: UDP, Port: 53}, true, allow},
		{"other direction", PolicyKey{EndpointID: 1, Direction: Ingress, Proto: UDP, Port: 53}, false, PolicyEntry{}},
		{"other endpoint", PolicyKey{EndpointID: 2, Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 443}, false, PolicyEntry{}},
	} {
		for name, m := range map[string]*Maps{"writer": e.dp.Maps, "reader": reader} {
			got, found, err := m.LookupPolicy(tc.key)
			if err != nil || found != tc.found || got != tc.want {
				t.Errorf("%s: %s: LookupPolicy(%s) = %s, %v, %v; want %s, %v", name, tc.name, tc.key, got, found, err, tc.want, tc.found)
			}
		}
	}

	// A change the writer makes later shows in the reader's lookups.
	must(t, e.dp.SetEndpointPolicy(1, append(rules[1:], Rule{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: 444}, Entry: allow})))
	for key, want := range map[PolicyKey]bool{in(1001, TCP, 443, 0): false, in(1001, TCP, 444, 0): true} {
		if _, found, err := reader.LookupPolicy(key); err != nil || found != want {
			t.Errorf("after the change: LookupPolicy(%s) found %v (%v), want %v", key, found, err, want)
		}
	}

	if _, _, err := reader.LookupPolicy(PolicyKey{Direction: Ingress, Proto: TCP, Port: 443}); !errors.Is(err, ErrInvalid) {
		t.Errorf("endpoint 0: %v, want ErrInvalid", err)
	}
}

// TestLookupIPCache: an address gets the identity of the longest prefix
// holding it, world (not found) without one.
func TestLookupIPCache(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.dp.UpsertIPCache(prefix("10.1.0.0/16"), 300))
	must(t, e.dp.UpsertIPCache(prefix("10.1.2.0/24"), 301))
	must(t, e.dp.UpsertIPCache(prefix("10.1.2.3/32"), 302))
	for _, c := range []struct {
		addr  string
		want  Identity
		found bool
	}{
		{"10.1.2.3", 302, true},
		{"10.1.2.4", 301, true},
		{"10.1.9.9", 300, true},
		{"10.2.0.1", IdentityWorld, false},
		{"::ffff:10.1.2.3", 302, true},
	} {
		got, found, err := e.dp.LookupIPCache(netip.MustParseAddr(c.addr))
		must(t, err)
		if got != c.want || found != c.found {
			t.Errorf("LookupIPCache(%s) = %s, %t; want %s, %t", c.addr, got, found, c.want, c.found)
		}
	}
	if _, _, err := e.dp.LookupIPCache(netip.MustParseAddr("fd00::1")); !errors.Is(err, ErrInvalid) {
		t.Errorf("LookupIPCache(fd00::1): %v, want ErrInvalid", err)
	}
}

package policy

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSetEndpointPolicyMatchesFromScratch changes one endpoint's policy a
// few rules at a time, at random, and after every call compares its map
// entries with those of another endpoint whose policy is written from
// scratch (removed, then written whole): the entries SetEndpointPolicy
// computes again (only the groups whose rules changed) must be the ones a
// whole write makes. Invalid policies must fail both ways and change
// nothing.
func TestSetEndpointPolicyMatchesFromScratch(t *testing.T) {
	e := newEnv(t, Options{})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	identities := []Identity{IdentityAny, 1001, 1002, 1003, 1004}
	protos := []Proto{AnyProto, TCP, UDP}
	ports := [][2]uint16{{0, 0}, {53, 0}, {80, 0}, {443, 0}, {8080, 0}, {80, 90}, {1, 1023}, {8000, 8999}, {440, 447}}
	entries := []PolicyEntry{
		{Verdict: Allow}, {Verdict: Allow, AuthRequired: true}, {Verdict: Deny},
		{Verdict: Redirect, ProxyPort: 15001}, {Verdict: Redirect, ProxyPort: 15001, AuthRequired: true},
	}
	randomRule := func() Rule {
		p := ports[rng.IntN(len(ports))]
		k := PolicyKey{
			Direction:      []Direction{Ingress, Egress}[rng.IntN(2)],
			RemoteIdentity: identities[rng.IntN(len(identities))],
			Proto:          protos[rng.IntN(len(protos))],
			Port:           p[0], EndPort: p[1],
		}
		if rng.IntN(4) == 0 {
			k.EndpointID = 1 // its own ID, as the caller may set
		}
		en := entries[rng.IntN(len(entries))]
		if rng.IntN(40) == 0 {
			// Conflicts with a redirect to 15001 of the same entry.
			en = PolicyEntry{Verdict: Redirect, ProxyPort: 15002}
		}
		return Rule{Key: k, Entry: en}
	}

	const a, b = EndpointID(1), EndpointID(2)
	entriesOf := func(id EndpointID) []PolicyMapEntry {
		got := policyOf(t, e.dp.Maps, id)
		for i := range got {
			got[i].Key.EndpointID = 0
		}
		return got
	}
	var rules []Rule
	for range 30 {
		rules = append(rules, randomRule())
	}
	incremental, failed := 0, 0
	for step := range 400 {
		// The caller's slice: changed in place now and then after the
		// call (SetEndpointPolicy keeps no reference to it).
		next := rules
		if rng.IntN(3) > 0 {
			next = slices.Clone(rules)
		}
		switch op := rng.IntN(20); {
		case op == 0:
			next = nil
		case op == 1:
			next = next[:0]
			for range 1 + rng.IntN(40) {
				next = append(next, randomRule())
			}
		case op == 2:
			rng.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
		default:
			for range 1 + rng.IntN(3) {
				switch c := rng.IntN(4); {
				case c == 0 || len(next) == 0:
					next = append(next, randomRule())
				case c == 1:
					i := rng.IntN(len(next))
					next = slices.Delete(next, i, i+1)
				case c == 2:
					next = append(next, next[rng.IntN(len(next))]) // a duplicate
				default:
					next[rng.IntN(len(next))] = randomRule()
				}
			}
		}
		if rng.IntN(10) > 0 {
			// The resolver's order, which is diffed with the last
			// call's rules (others are written whole).
			slices.SortFunc(next, compareRules)
		}
		if rng.IntN(50) == 0 {
			// Entries written around SetEndpointPolicy: the next call
			// writes the whole policy again.
			must(t, e.dp.UpsertPolicy(PolicyKey{EndpointID: a, Direction: Egress, RemoteIdentity: 1003, Proto: TCP, Port: 80}, PolicyEntry{Verdict: Deny}))
		}
		before := entriesOf(a)
		_, known := e.dp.Maps.rules[a]
		known = known && slices.IsSortedFunc(next, compareRules)
		errA := e.dp.SetEndpointPolicy(a, next)
		must(t, e.dp.SetEndpointPolicy(b, nil))
		forB := slices.Clone(next)
		for i := range forB {
			if forB[i].Key.EndpointID == a {
				forB[i].Key.EndpointID = b
			}
		}
		errB := e.dp.SetEndpointPolicy(b, forB)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("step %d: changed: %v; from scratch: %v", step, errA, errB)
		}
		if errA != nil {
			failed++
			if got := entriesOf(a); !reflect.DeepEqual(got, before) {
				t.Fatalf("step %d: the failed call (%v) changed the entries:\n%+v\nwere\n%+v", step, errA, got, before)
			}
			continue
		}
		if known {
			incremental++ // in part, unless most groups changed
		}
		if got, want := entriesOf(a), entriesOf(b); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: %d rules: changed, the entries are\n%+v\nfrom scratch\n%+v", step, len(next), got, want)
		}
		// The Datapath counts the policy map's entries from its copy.
		if n, err := countKeys(e.dp.Maps.policy); err != nil || n != e.dp.Maps.policyEntries() {
			t.Fatalf("step %d: %d entries in the map (%v), %d counted from the copy", step, n, err, e.dp.Maps.policyEntries())
		}
		rules = next
		if rng.IntN(5) == 0 && len(next) > 0 {
			next[rng.IntN(len(next))] = randomRule() // the caller reuses its slice
			rules = slices.Clone(next)
			// What the maps hold is still the policy of the call; the next
			// call with rules changed in place is compared as any other.
		}
	}
	t.Logf("%d calls written incrementally, %d invalid", incremental, failed)
	if incremental < 200 {
		t.Errorf("only %d of 400 calls were diffed with the last one", incremental)
	}
}

// TestSetEndpointPolicyShared: endpoints given equal rules (in slices of
// their own) share one list, and a change they all make is computed once;
// every endpoint's entries carry its own ID. A list whose keys name an
// endpoint is that endpoint's only.
func TestSetEndpointPolicyShared(t *testing.T) {
	e := newEnv(t, Options{})
	m := e.dp.Maps
	allow := PolicyEntry{Verdict: Allow}
	rules := func(port uint16) []Rule {
		rs := []Rule{
			{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1001, Proto: TCP, Port: port}, Entry: allow},
			{Key: PolicyKey{Direction: Ingress, RemoteIdentity: 1002, Proto: TCP, Port: 443}, Entry: allow},
			{Key: PolicyKey{Direction: Egress, RemoteIdentity: 1003, Proto: UDP, Port: 53}, Entry: PolicyEntry{Verdict: Deny}},
		}
		slices.SortFunc(rs, compareRules)
		return rs
	}
	ids := []EndpointID{1, 2, 3}
	check := func(port uint16) {
		t.Helper()
		for _, id := range ids {
			got := policyOf(t, m, id)
			if len(got) != 3 {
				t.Fatalf("endpoint %d: %d entries, want 3: %+v", id, len(got), got)
			}
			var ports []uint16
			for _, pe := range got {
				if pe.Key.EndpointID != id {
					t.Errorf("endpoint %d holds %s", id, pe.Key)
				}
				if pe.Key.RemoteIdentity == 1001 {
					ports = append(ports, pe.Key.Port)
				}
			}
			if !slices.Equal(ports, []uint16{port}) {
				t.Errorf("endpoint %d: identity 1001 to ports %v, want %d", id, ports, port)
			}
		}
	}
	for _, id := range ids {
		must(t, e.dp.SetEndpointPolicy(id, rules(80)))
	}
	check(80)
	if m.rules[1] != m.rules[2] || m.rules[2] != m.rules[3] {
		t.Errorf("equal rules: lists %p %p %p, want one", m.rules[1], m.rules[2], m.rules[3])
	}
	clear(m.plans)
	for _, id := range ids {
		must(t, e.dp.SetEndpointPolicy(id, rules(8080)))
	}
	check(8080)
	if len(m.plans) != 1 {
		t.Errorf("%d plans for one change of 3 endpoints, want 1", len(m.plans))
	}

	// Keys naming endpoint 1 are not endpoint 2's.
	own := rules(9090)
	for i := range own {
		own[i].Key.EndpointID = 1
	}
	must(t, e.dp.SetEndpointPolicy(1, own))
	before := policyOf(t, m, 2)
	err := e.dp.SetEndpointPolicy(2, own)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "of endpoint 1, not 2") {
		t.Errorf("endpoint 2 given endpoint 1's keys: %v, want invalid", err)
	}
	if got := policyOf(t, m, 2); !reflect.DeepEqual(got, before) {
		t.Errorf("the refused call changed endpoint 2's entries:\n%+v\nwere\n%+v", got, before)
	}
}

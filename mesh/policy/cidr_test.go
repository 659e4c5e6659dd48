package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestAllocateCIDRs(t *testing.T) {
	got := allocateCIDRs(prefixes("10.1.2.3/8", "10.0.0.0/8", "0.0.0.0/0", "::/0", "192.0.2.0/24", "2001:db8::/32"), nil)
	var ps []string
	for _, c := range got {
		ps = append(ps, c.Prefix.String())
		if c.ID < MinCIDRIdentity || c.ID > MaxCIDRIdentity {
			t.Errorf("%s: identity %d outside the local range", c.Prefix, c.ID)
		}
		if c.ID != hashPrefix(c.Prefix) {
			t.Errorf("%s: identity %d, want its hash %d (no collision here)", c.Prefix, c.ID, hashPrefix(c.Prefix))
		}
	}
	// Masked, deduplicated, /0 left to world, sorted.
	if want := []string{"10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"}; !slices.Equal(ps, want) {
		t.Errorf("prefixes %v, want %v", ps, want)
	}

	// The number of a prefix does not depend on the others (barring
	// collisions) nor on their order.
	other := allocateCIDRs(prefixes("2001:db8::/32", "198.51.100.0/24", "10.0.0.0/8"), nil)
	if other[0].ID != got[0].ID {
		t.Errorf("10.0.0.0/8 got %d, then %d", got[0].ID, other[0].ID)
	}
}

func TestAllocateCIDRsCollisions(t *testing.T) {
	// Find two prefixes whose hashes collide (birthday bound: a few
	// thousand tries in 2^24).
	seen := map[identity.ID]netip.Prefix{}
	var a, b netip.Prefix
	for i := 0; ; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.%d/32", i>>16&255, i>>8&255, i&255))
		if q, ok := seen[hashPrefix(p)]; ok {
			a, b = q, p
			break
		}
		seen[hashPrefix(p)] = p
	}
	got := allocateCIDRs([]netip.Prefix{b, a}, nil)
	if got[0].ID == got[1].ID {
		t.Fatalf("%s and %s share identity %d", a, b, got[0].ID)
	}
	// The earlier prefix (sorted) keeps its hash, the later one probes.
	first, second := a, b
	if comparePrefix(b, a) < 0 {
		first, second = b, a
	}
	want := []CIDRIdentity{{first, hashPrefix(first)}, {second, hashPrefix(first) + 1}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// A previous allocation wins, even when it gave the hash to the later
	// prefix.
	prev := []CIDRIdentity{{second, hashPrefix(first)}}
	got = allocateCIDRs([]netip.Prefix{a, b}, prev)
	want = []CIDRIdentity{{first, hashPrefix(first) + 1}, {second, hashPrefix(first)}}
	if !slices.Equal(got, want) {
		t.Errorf("with previous: got %v, want %v", got, want)
	}
}

func TestAllocateCIDRsPrevious(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/24")
	for _, c := range []struct {
		name string
		prev []CIDRIdentity
		want identity.ID
	}{
		{"kept", []CIDRIdentity{{p, MinCIDRIdentity + 7}}, MinCIDRIdentity + 7},
		{"out of range", []CIDRIdentity{{p, 300}}, hashPrefix(p)},
		{"prefix gone", []CIDRIdentity{{netip.MustParsePrefix("192.0.3.0/24"), MinCIDRIdentity + 7}}, hashPrefix(p)},
		{"taken twice", []CIDRIdentity{{p, MinCIDRIdentity + 7}, {netip.MustParsePrefix("192.0.2.0/25"), MinCIDRIdentity + 7}}, MinCIDRIdentity + 7},
	} {
		got := allocateCIDRs([]netip.Prefix{p, netip.MustParsePrefix("192.0.2.0/25")}, c.prev)
		if got[0].ID != c.want {
			t.Errorf("%s: %d, want %d", c.name, got[0].ID, c.want)
		}
		if got[0].ID == got[1].ID {
			t.Errorf("%s: duplicate identity %d", c.name, got[0].ID)
		}
	}
}

func TestCIDRPeers(t *testing.T) {
	all := allocateCIDRs(prefixes("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.96.0.0/12", "11.0.0.0/8", "2001:db8::/32", "0.0.0.0/1"), nil)
	id := func(s string) identity.ID {
		for _, c := range all {
			if c.Prefix.String() == s {
				return c.ID
			}
		}
		t.Fatalf("no identity for %s", s)
		return 0
	}
	sorted := func(ids ...identity.ID) []identity.ID { slices.Sort(ids); return ids }
	for _, c := range []struct {
		name string
		rule CIDRRule
		want []identity.ID
	}{
		{"itself and within", CIDRRule{CIDR: netip.MustParsePrefix("10.0.0.0/8")},
			sorted(id("10.0.0.0/8"), id("10.1.0.0/16"), id("10.1.2.0/24"), id("10.96.0.0/12"))},
		{"except carves out", CIDRRule{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: prefixes("10.1.0.0/16")},
			sorted(id("10.0.0.0/8"), id("10.96.0.0/12"))},
		{"not a supernet", CIDRRule{CIDR: netip.MustParsePrefix("10.1.0.0/16")},
			sorted(id("10.1.0.0/16"), id("10.1.2.0/24"))},
		{"not the other family", CIDRRule{CIDR: netip.MustParsePrefix("2001:db8::/16")},
			[]identity.ID{id("2001:db8::/32")}},
		{"/0 is world and every prefix of its family", CIDRRule{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Except: prefixes("10.0.0.0/8")},
			sorted(identity.World, id("0.0.0.0/1"), id("11.0.0.0/8"))},
	} {
		got := cidrPeers(c.rule, all)
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

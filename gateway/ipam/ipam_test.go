package ipam

import (
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestParsePool(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"172.18.0.200-172.18.0.210", "172.18.0.200-172.18.0.210", ""},
		{"10.0.0.0/29", "10.0.0.1-10.0.0.6", ""},
		{"10.0.0.5/30", "10.0.0.5-10.0.0.6", ""},
		{"10.0.0.9-10.0.0.1", "", "first not above last"},
		{"10.0.0.0/32", "", "at least 4"},
		{"fd00::/64", "", "IPv4"},
		{"pool", "", "IPv4"},
	} {
		p, err := ParsePool(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParsePool(%q) = %v, %v; want error containing %q", c.in, p, err, c.err)
			}
			continue
		}
		if err != nil || p.String() != c.want {
			t.Errorf("ParsePool(%q) = %v, %v; want %s", c.in, p, err, c.want)
		}
	}
}

func TestAssign(t *testing.T) {
	pool, _ := ParsePool("10.0.0.10-10.0.0.13")
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	n := func(s string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: s} }
	res := Assign(pool, []Gateway{
		{Name: n("new"), Created: 5},
		{Name: n("keeps"), Current: a("10.0.0.12"), Created: 9},
		{Name: n("asks"), Requested: a("10.0.0.10"), Created: 7},
		{Name: n("outside"), Requested: a("10.1.0.1"), Created: 1},
		{Name: n("moved"), Current: a("10.9.9.9"), Created: 6},
		{Name: n("late"), Created: 10},
	})
	want := map[string]string{"asks": "10.0.0.10", "keeps": "10.0.0.12", "new": "10.0.0.11", "moved": "10.0.0.13"}
	for name, addr := range want {
		if got := res.Addresses[n(name)]; got != a(addr) {
			t.Errorf("%s: got %v, want %s", name, got, addr)
		}
	}
	if len(res.Addresses) != len(want) {
		t.Errorf("assigned %v, want only %v", res.Addresses, want)
	}
	if p := res.Problems[n("outside")]; !strings.Contains(p, "not in the pool") {
		t.Errorf("outside: problem %q", p)
	}
	if p := res.Problems[n("late")]; !strings.Contains(p, "exhausted") {
		t.Errorf("late: problem %q", p)
	}
	// The same input gives the same result.
	again := Assign(pool, []Gateway{{Name: n("late"), Created: 10}, {Name: n("new"), Created: 5}})
	if again.Addresses[n("new")] != a("10.0.0.10") || again.Addresses[n("late")] != a("10.0.0.11") {
		t.Errorf("second assignment %v", again.Addresses)
	}
}

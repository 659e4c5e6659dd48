package lbipam

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

func mustRange(t *testing.T, a, b string) Range {
	t.Helper()
	r, err := ParseRange(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseCIDR(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/30":  "10.0.0.1-10.0.0.2",
		"10.0.0.5/32":  "10.0.0.5-10.0.0.5",
		"10.0.0.4/31":  "10.0.0.4-10.0.0.5",
		"10.0.0.77/29": "10.0.0.73-10.0.0.78",
	} {
		r, err := ParseCIDR(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseCIDR(%s) = %s, %v; want %s", in, r, err, want)
		}
	}
	for _, bad := range []string{"fd00::/64", "10.0.0.1", "x"} {
		if _, err := ParseCIDR(bad); err == nil {
			t.Errorf("ParseCIDR(%s): no error", bad)
		}
	}
	if _, err := ParseRange("10.0.0.9", "10.0.0.1"); err == nil {
		t.Error("ParseRange with stop below start: no error")
	}
}

func TestAssign(t *testing.T) {
	a := netip.MustParseAddr
	sel, _ := labels.Parse("tier=edge")
	pools := []Pool{
		{Name: "main", Created: 1, Ranges: []Range{mustRange(t, "10.0.0.1", "10.0.0.2")}},
		{Name: "edge", Created: 2, Selector: sel, Ranges: []Range{mustRange(t, "10.0.1.1", "10.0.1.1")}},
		{Name: "clash", Created: 3, Ranges: []Range{mustRange(t, "10.0.0.2", "10.0.0.9")}},
	}
	claims := []Claim{
		{Key: "ns/keep", Created: 5, Current: a("10.0.0.2")},
		{Key: "ns/first", Created: 1},
		{Key: "ns/edge", Created: 2, Labels: labels.Set{"tier": "edge"}, Requested: a("10.0.1.1")},
		{Key: "ns/outside", Created: 3, Requested: a("10.0.5.5")},
		{Key: "ns/clashreq", Created: 3, Requested: a("10.0.0.7")},
		{Key: "ns/late", Created: 9},
	}
	res := Assign(pools, claims)
	want := map[string]string{"ns/keep": "10.0.0.2", "ns/first": "10.0.0.1", "ns/edge": "10.0.1.1"}
	if len(res.Addresses) != len(want) {
		t.Errorf("addresses %v, want %v", res.Addresses, want)
	}
	for k, v := range want {
		if res.Addresses[k] != a(v) {
			t.Errorf("%s got %s, want %s", k, res.Addresses[k], v)
		}
	}
	for k, sub := range map[string]string{"ns/outside": "in no pool", "ns/clashreq": "in no pool", "ns/late": "every address of the pools main is in use"} {
		if !strings.Contains(res.Problems[k], sub) {
			t.Errorf("problem of %s = %q, want it to say %q", k, res.Problems[k], sub)
		}
	}
	if got := res.Pools["clash"].ConflictsWith; got != "main" {
		t.Errorf("clash conflicts with %q, want main", got)
	}
	if res.Pools["main"].ConflictsWith != "" || !res.Pools["main"].Exhausted || res.Pools["main"].Used != 2 || res.Pools["main"].Total != 2 {
		t.Errorf("main status %+v", *res.Pools["main"])
	}
	// Disabled: nothing new, current addresses stay.
	pools[0].Disabled = true
	res = Assign(pools, []Claim{{Key: "ns/keep", Current: a("10.0.0.2")}, {Key: "ns/new"}})
	if res.Addresses["ns/keep"] != a("10.0.0.2") || res.Addresses["ns/new"].IsValid() {
		t.Errorf("disabled pool: %v", res.Addresses)
	}
}

// TestLedgerKeepsAddresses: a pass that reads a cache without the status
// an earlier pass wrote does not move the address to another claim.
func TestLedgerKeepsAddresses(t *testing.T) {
	a := netip.MustParseAddr
	pools := []Pool{{Name: "main", Ranges: []Range{mustRange(t, "10.0.0.1", "10.0.0.9")}}}
	var l Ledger
	// "shop" alone: the first address.
	if got := l.Assign(pools, []Claim{{Key: "ingress:ns/shop", Created: 5}}).Addresses; got["ingress:ns/shop"] != a("10.0.0.1") {
		t.Fatalf("first pass: %v", got)
	}
	// Two more, created in the same second, whose keys sort first; the
	// cache has no status of shop yet.
	claims := []Claim{{Key: "ingress:ns/shop", Created: 5}, {Key: "ingress:ns/blog", Created: 5}, {Key: "gateway:ns/gw", Created: 5}}
	got := l.Assign(pools, claims).Addresses
	want := map[string]netip.Addr{"ingress:ns/shop": a("10.0.0.1"), "gateway:ns/gw": a("10.0.0.2"), "ingress:ns/blog": a("10.0.0.3")}
	if !maps.Equal(got, want) {
		t.Errorf("second pass: %v, want %v", got, want)
	}
	// Without the ledger the address moves.
	if got := Assign(pools, claims).Addresses; got["ingress:ns/shop"] == a("10.0.0.1") {
		t.Errorf("the pure assignment kept shop's address without its current one: the test shows nothing")
	}
	// A claim that is gone leaves the ledger: its address is free again.
	got = l.Assign(pools, claims[1:]).Addresses
	if got["gateway:ns/gw"] != a("10.0.0.2") || got["ingress:ns/blog"] != a("10.0.0.3") {
		t.Errorf("after shop is gone: %v", got)
	}
	if got := l.Assign(pools, append(claims[1:], Claim{Key: "svc:ns/new", Created: 9})).Addresses; got["svc:ns/new"] != a("10.0.0.1") {
		t.Errorf("a new claim gets %s, want the freed 10.0.0.1", got["svc:ns/new"])
	}
}

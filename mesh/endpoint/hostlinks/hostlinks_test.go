package hostlinks

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/mesh/endpoint"
)

// TestHostInterfaces finds veths by their /32 routes in a namespace of its
// own, looks each link up once while it stays, and sees a pod's address move
// to a new veth.
func TestHostInterfaces(t *testing.T) {
	path := netns.ForTest(t)
	in := func(fn func() error) {
		t.Helper()
		if err := netns.Do(path, fn); err != nil {
			t.Fatal(err)
		}
	}
	addVeth := func(name string, dst string) int {
		t.Helper()
		var index int
		in(func() error {
			la := netlink.NewLinkAttrs()
			la.Name = name
			v := &netlink.Veth{LinkAttrs: la, PeerName: name + "p"}
			if err := netlink.LinkAdd(v); err != nil {
				return err
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			index = l.Attrs().Index
			_, ipn, _ := net.ParseCIDR(dst)
			return netlink.RouteAdd(&netlink.Route{LinkIndex: index, Dst: ipn, Scope: netlink.SCOPE_LINK})
		})
		return index
	}
	n := New()
	now := time.Unix(1000, 0)
	n.now = func() time.Time { return now }
	lookups := 0
	n.byIndex = func(i int) (netlink.Link, error) { lookups++; return netlink.LinkByIndex(i) }
	hostInterfaces := func() map[netip.Addr]endpoint.Interface {
		t.Helper()
		var out map[netip.Addr]endpoint.Interface
		in(func() (err error) {
			out, err = n.HostInterfaces()
			return err
		})
		return out
	}
	pod := netip.MustParseAddr("10.9.0.1")
	i0 := addVeth("hl0", "10.9.0.1/32")
	in(func() error {
		// A /32 route to a link that is not a veth is no pod's.
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		_, ipn, _ := net.ParseCIDR("10.9.0.2/32")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: ipn, Scope: netlink.SCOPE_LINK})
	})
	want := map[netip.Addr]endpoint.Interface{pod: {Index: i0, Name: "hl0"}}
	for round := range 3 {
		if got := hostInterfaces(); !equal(got, want) {
			t.Fatalf("round %d: %v, want %v", round, got, want)
		}
	}
	if lookups != 2 {
		t.Errorf("%d link lookups in 3 rounds, want 2 (the veth and lo, once)", lookups)
	}
	// After linkTTL, the links are looked up again.
	now = now.Add(linkTTL)
	hostInterfaces()
	if lookups != 4 {
		t.Errorf("%d link lookups after linkTTL, want 4", lookups)
	}

	// The pod's veth goes; its address comes back on another.
	in(func() error {
		l, err := netlink.LinkByName("hl0")
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if got := hostInterfaces(); len(got) != 0 {
		t.Fatalf("without the veth: %v", got)
	}
	if _, ok := n.links[i0]; ok {
		t.Errorf("link %d still remembered after its routes went", i0)
	}
	i1 := addVeth("hl1", "10.9.0.1/32")
	want = map[netip.Addr]endpoint.Interface{pod: {Index: i1, Name: "hl1"}}
	if got := hostInterfaces(); !equal(got, want) {
		t.Fatalf("on the new veth: %v, want %v", got, want)
	}
}

func equal(a, b map[netip.Addr]endpoint.Interface) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

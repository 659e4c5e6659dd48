package node

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/cni/nstest"
)

// TestNetlink announces and withdraws Gateway addresses on the interface
// holding the node address, in a network namespace of the test's own, and
// checks that Cleanup removes what is left and nothing else.
func TestNetlink(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	node := netip.MustParseAddr("198.18.99.10")
	gw1, gw2 := netip.MustParseAddr("198.18.99.200"), netip.MustParseAddr("198.18.99.201")
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	addrs := func() []netip.Addr {
		var out []netip.Addr
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		list, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range list {
			ip, _ := netip.AddrFromSlice(a.IP.To4())
			out = append(out, ip)
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	nstest.Do(t, ns, func() error {
		d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0p"}
		if err := netlink.LinkAdd(d); err != nil {
			return err
		}
		if err := netlink.AddrAdd(d, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(node.AsSlice()), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		a := Netlink{Log: log}
		if err := a.Sync(ctx, node, []netip.Addr{gw1, gw2}); err != nil {
			return err
		}
		if got := addrs(); !slices.Equal(got, []netip.Addr{node, gw1, gw2}) {
			t.Errorf("after announcing two: %v", got)
		}
		if err := a.Sync(ctx, node, []netip.Addr{gw2}); err != nil {
			return err
		}
		if got := addrs(); !slices.Equal(got, []netip.Addr{node, gw2}) {
			t.Errorf("after withdrawing one: %v", got)
		}
		if err := a.Sync(ctx, node, []netip.Addr{gw2}); err != nil {
			t.Errorf("sync again: %v", err)
		}
		if err := Cleanup(log); err != nil {
			return err
		}
		if got := addrs(); !slices.Equal(got, []netip.Addr{node}) {
			t.Errorf("after cleanup: %v, want only the node address", got)
		}
		if err := a.Sync(ctx, netip.MustParseAddr("198.18.98.1"), []netip.Addr{gw1}); err == nil {
			t.Errorf("sync with a node address no interface has: no error")
		}
		return nil
	})
}

package mtu

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

// inNetns runs fn in a new network namespace.
func inNetns(t *testing.T, fn func() error) {
	t.Helper()
	if err := netns.Do(netns.ForTest(t), fn); err != nil {
		t.Fatal(err)
	}
}

// link adds an up veth (and its peer) with mtu and address prefix.
func link(name string, mtu int, prefix string) (netlink.Link, error) {
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: name + "p"}
	if err := netlink.LinkAdd(l); err != nil {
		return nil, fmt.Errorf("add %s: %w", name, err)
	}
	for _, n := range []string{name, name + "p"} {
		if err := netlink.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}}); err != nil {
			return nil, fmt.Errorf("set %s up: %w", n, err)
		}
	}
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		return nil, err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return nil, fmt.Errorf("address %s: %w", name, err)
	}
	return netlink.LinkByName(name)
}

func TestDetect(t *testing.T) {
	inNetns(t, func() error {
		if _, err := Detect(nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("no node address, no default route: %v, want ErrNotFound", err)
		}
		if _, err := link("under0", 1450, "198.51.100.2/24"); err != nil {
			return err
		}
		jumbo, err := link("jumbo0", 9000, "203.0.113.2/24")
		if err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: jumbo.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
			return err
		}
		for _, tc := range []struct {
			name string
			ips  []netip.Addr
			want Found
		}{
			{"the node address's interface", []netip.Addr{netip.MustParseAddr("198.51.100.2")},
				Found{MTU: 1450, Device: "under0", By: "node address 198.51.100.2"}},
			{"the first node address found", []netip.Addr{netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("198.51.100.2")},
				Found{MTU: 1450, Device: "under0", By: "node address 198.51.100.2"}},
			{"no node address here: the default route's", []netip.Addr{netip.MustParseAddr("192.0.2.9")},
				Found{MTU: 9000, Device: "jumbo0", By: "default route"}},
			{"no node address known", nil, Found{MTU: 9000, Device: "jumbo0", By: "default route"}},
		} {
			got, err := Detect(tc.ips)
			if err != nil || got != tc.want {
				t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
			}
		}
		return nil
	})
}

package veth

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/cni/nstest"
)

func TestHostIfName(t *testing.T) {
	a := HostIfName("container-1", "eth0")
	if len(a) != 14 || !strings.HasPrefix(a, "mbr") || strings.Trim(a[3:], "0123456789abcdef") != "" {
		t.Errorf("HostIfName = %q, want mbr + 11 hex digits", a)
	}
	if names := HostIfNames("container-1", "eth0"); len(names) != 2 || names[0] != a || names[1] != "lxc"+a[3:] {
		t.Errorf("HostIfNames = %q, want [%s lxc%s]", names, a, a[3:])
	}
	if a != HostIfName("container-1", "eth0") {
		t.Error("HostIfName is not deterministic")
	}
	if a == HostIfName("container-1", "net1") || a == HostIfName("container-2", "eth0") {
		t.Error("HostIfName does not depend on both container ID and interface")
	}
}

func TestRandomMAC(t *testing.T) {
	mac, err := randomMAC()
	if err != nil {
		t.Fatal(err)
	}
	if mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
		t.Errorf("MAC %s is not unicast and locally administered", mac)
	}
}

func TestSetupVerifyRemove(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	node, pod := nstest.New(t), nstest.New(t)
	cfg := Config{
		HostIfName: HostIfName("c1", "eth0"),
		PodIfName:  "eth0",
		PodNS:      pod,
		IP:         netip.MustParseAddr("10.244.1.2"),
		MTU:        1400,
	}
	nstest.Do(t, node, func() error {
		pair, err := Setup(ctx, cfg)
		if err != nil {
			t.Fatalf("Setup: %v", err)
		}
		if pair.Host.Name != cfg.HostIfName || pair.Pod.Name != "eth0" || len(pair.Host.MAC) != 6 || len(pair.Pod.MAC) != 6 {
			t.Errorf("Setup = %+v", pair)
		}
		if err := Verify(ctx, cfg); err != nil {
			t.Errorf("Verify after Setup: %v", err)
		}
		if _, err := Setup(ctx, cfg); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("second Setup = %v, want already exists", err)
		}

		// Break the pod side: Verify says what is missing.
		nstest.Do(t, pod, func() error {
			link, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: link.Attrs().Index, IP: net.IP(Gateway().AsSlice())})
		})
		if err := Verify(ctx, cfg); err == nil || !strings.Contains(err.Error(), "missing permanent neighbor 169.254.1.1") {
			t.Errorf("Verify without neighbor = %v", err)
		}
		wrongIP := cfg
		wrongIP.IP = netip.MustParseAddr("10.244.1.9")
		if err := Verify(ctx, wrongIP); err == nil || !strings.Contains(err.Error(), "missing address 10.244.1.9/32") {
			t.Errorf("Verify with another IP = %v", err)
		}

		removed, err := Remove(ctx, cfg.HostIfName)
		if err != nil || !removed {
			t.Errorf("Remove = %v, %v; want true, nil", removed, err)
		}
		removed, err = Remove(ctx, cfg.HostIfName)
		if err != nil || removed {
			t.Errorf("second Remove = %v, %v; want false, nil", removed, err)
		}
		if err := Verify(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("Verify after Remove = %v", err)
		}
		return nil
	})
	nstest.Do(t, pod, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("pod eth0 still exists after Remove")
		}
		return nil
	})
}

func TestSetupFailureLeavesNothing(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	node, pod := nstest.New(t), nstest.New(t)
	cfg := Config{HostIfName: HostIfName("c1", "eth0"), PodIfName: "eth0", PodNS: pod, IP: netip.MustParseAddr("10.244.1.2"), MTU: 1500}
	nstest.Do(t, node, func() error {
		// A route to the pod IP already on the node makes the host side fail
		// after the pair exists.
		other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, PeerName: "other1"}
		if err := netlink.LinkAdd(other); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(other); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: other.Attrs().Index, Dst: hostNet(cfg.IP), Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
		if _, err := Setup(ctx, cfg); err == nil {
			t.Fatal("Setup with a conflicting route succeeded")
		}
		if _, err := netlink.LinkByName(cfg.HostIfName); err == nil {
			t.Errorf("host veth %s left behind after failed Setup", cfg.HostIfName)
		}
		return nil
	})
	nstest.Do(t, pod, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("pod eth0 left behind after failed Setup")
		}
		return nil
	})
}

// TestRemoveAllLegacyName: a pod wired by an earlier version (host side
// "lxc…") is detached by RemoveAll, as is one with the current name.
func TestRemoveAllLegacyName(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	node := nstest.New(t)
	for i, name := range HostIfNames("c1", "eth0") {
		pod := nstest.New(t)
		cfg := Config{HostIfName: name, PodIfName: "eth0", PodNS: pod, IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}), MTU: 1500}
		nstest.Do(t, node, func() error {
			if _, err := Setup(ctx, cfg); err != nil {
				t.Fatalf("Setup %s: %v", name, err)
			}
			removed, err := RemoveAll(ctx, "c1", "eth0")
			if err != nil || !removed {
				t.Errorf("RemoveAll with %s = %v, %v; want true, nil", name, removed, err)
			}
			if _, err := netlink.LinkByName(name); err == nil {
				t.Errorf("%s still exists after RemoveAll", name)
			}
			if removed, err := RemoveAll(ctx, "c1", "eth0"); err != nil || removed {
				t.Errorf("second RemoveAll = %v, %v; want false, nil", removed, err)
			}
			return nil
		})
	}
}

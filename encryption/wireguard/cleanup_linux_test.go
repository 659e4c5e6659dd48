package wireguard

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// TestCleanup removes a node's WireGuard state (the embedded device's TUN,
// the rule, the routing table, a stale UAPI socket, the key file) in a
// fresh network namespace, and leaves what is not ours: another TUN, a rule
// and a route of another table, other files in the state dir. A second run
// is a no-op.
func TestCleanup(t *testing.T) {
	testenv.RequireRoot(t, "creates a network namespace, a TUN device and ip rules")
	ns := netns.ForTest(t)
	stateDir, uapi := t.TempDir(), t.TempDir()
	do := func(fn func() error) {
		t.Helper()
		if err := netns.Do(ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	do(func() error {
		for _, name := range []string{DeviceName, "other_tun"} {
			if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN}); err != nil {
				return err
			}
		}
		r, err := newNetlinkRouter(DeviceName)
		if err != nil {
			return err
		}
		defer r.Close()
		wg, err := netlink.LinkByName(DeviceName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(wg); err != nil {
			return err
		}
		if _, err := r.Sync(nil); err != nil {
			return err
		}
		_, peer, _ := net.ParseCIDR("10.9.1.0/24")
		for _, rt := range []*netlink.Route{
			{LinkIndex: wg.Attrs().Index, Dst: peer, Table: RouteTable, Protocol: RouteProtocol, Scope: netlink.SCOPE_LINK},
			{Dst: peer, Table: RouteTable, Protocol: RouteProtocol, Type: unix.RTN_BLACKHOLE, Priority: BlackholeMetric},
			{Dst: peer, Table: 100, Type: unix.RTN_BLACKHOLE},
		} {
			if err := netlink.RouteAdd(rt); err != nil {
				return err
			}
		}
		rule := netlink.NewRule()
		rule.Family, rule.Priority, rule.Table = netlink.FAMILY_V4, 100, 100
		return netlink.RuleAdd(rule)
	})
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := NewKeyFile(stateDir).Store(k); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"." + KeyFileName + ".123", "other"} {
		if err := os.WriteFile(filepath.Join(stateDir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A socket nobody serves any more, as a killed embedded device leaves.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(uapi, DeviceName+".sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	do(func() error { return cleanup(log, stateDir, uapi) })
	t.Logf("Cleanup:\n%s", logs.String())
	for _, want := range []string{"deleted WireGuard device", "deleted ip rule", "removed stale WireGuard UAPI socket"} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("logged %q %d times, want once", want, n)
		}
	}
	if n := strings.Count(logs.String(), "removed WireGuard key file"); n != 2 {
		t.Errorf("logged %d removed key files, want 2", n)
	}
	if n := strings.Count(logs.String(), "deleted route"); n != 2 {
		t.Errorf("logged %d deleted routes, want 2 (tunnel and blackhole)", n)
	}
	do(func() error {
		if _, err := netlink.LinkByName(DeviceName); err == nil {
			t.Errorf("%s still there", DeviceName)
		}
		if _, err := netlink.LinkByName("other_tun"); err != nil {
			t.Errorf("other_tun: %v", err)
		}
		ours, err := netlink.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil || len(ours) != 0 {
			t.Errorf("rules of table %d: %v %v, want none", RouteTable, ours, err)
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil || len(routes) != 0 {
			t.Errorf("routes of table %d: %v %v, want none", RouteTable, routes, err)
		}
		other, err := netlink.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: 100}, netlink.RT_FILTER_TABLE)
		if err != nil || len(other) != 1 {
			t.Errorf("foreign rules %v %v, want one", other, err)
		}
		routes, err = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 100}, netlink.RT_FILTER_TABLE)
		if err != nil || len(routes) != 1 {
			t.Errorf("foreign routes %v %v, want one", routes, err)
		}
		return nil
	})
	entries, err := os.ReadDir(stateDir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "other" {
		t.Errorf("state dir after Cleanup: %v %v, want only other", entries, err)
	}
	if _, err := os.Lstat(filepath.Join(uapi, DeviceName+".sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale UAPI socket: %v", err)
	}

	logs.Reset()
	do(func() error { return cleanup(log, stateDir, uapi) })
	if logs.Len() != 0 {
		t.Errorf("second Cleanup logged:\n%s", logs.String())
	}
}

// TestCleanupLeavesForeignDevice: an interface by our name that is no
// WireGuard device, and a UAPI socket someone serves, are not ours to take.
func TestCleanupLeavesForeignDevice(t *testing.T) {
	testenv.RequireRoot(t, "creates a network namespace and a veth pair")
	ns := filepath.Join(t.TempDir(), "netns")
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Remove(ns) })
	uapi := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(uapi, DeviceName+".sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = netns.Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: DeviceName}, PeerName: "peer0"}); err != nil {
			return err
		}
		if err := cleanup(slog.New(slog.NewTextHandler(t.Output(), nil)), "", uapi); err != nil {
			return err
		}
		_, err := netlink.LinkByName(DeviceName)
		return err
	})
	if err != nil {
		t.Fatalf("veth %s: %v", DeviceName, err)
	}
	if _, err := os.Lstat(filepath.Join(uapi, DeviceName+".sock")); err != nil {
		t.Errorf("served UAPI socket: %v", err)
	}
}

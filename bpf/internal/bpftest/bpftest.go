// Package bpftest gives datapath tests a fresh cgroup, a fresh bpffs pin
// directory and a fresh network namespace, all removed when the test ends,
// failed or not.
package bpftest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/cgroups"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// BPFFSRoot is where bpffs is expected (and mounted when missing).
const BPFFSRoot = "/sys/fs/bpf"

// Cgroup creates membrane-test-<random> below the cgroup v2 root. Cleanup
// kills whatever still runs in it and removes it.
func Cgroup(tb testing.TB) string {
	tb.Helper()
	root, err := cgroups.Root()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, name())
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatalf("create test cgroup: %v", err)
	}
	tb.Cleanup(func() {
		if err := cgroups.Remove(dir); err != nil {
			tb.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}

// PinDir creates membrane-test-<random> on bpffs, mounting bpffs at
// /sys/fs/bpf first if it is not there. Cleanup removes the directory and
// every pin in it.
func PinDir(tb testing.TB) string {
	tb.Helper()
	if err := ensureBPFFS(); err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(BPFFSRoot, name())
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatalf("create test pin dir: %v", err)
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("remove test pin dir: %v", err)
		}
	})
	return dir
}

// Netns creates a network namespace pinned at a file in a temp dir, with
// only lo, up, in it: no other interface and no route but loopback's, so a
// packet sent inside it can reach only 127.0.0.0/8 and a connect to any
// other address fails at once (ENETUNREACH) instead of leaving the machine.
// Enter it with netns.Do (or setns(2) on a locked thread). Cleanup removes
// it; sockets still open in it keep it alive until they close.
func Netns(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "netns")
	if err := netns.Create(path); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := netns.Remove(path); err != nil {
			tb.Errorf("remove test netns: %v", err)
		}
	})
	if err := loopbackOnly(path); err != nil {
		tb.Fatalf("test netns %s: %v", path, err)
	}
	return path
}

// loopbackOnly brings lo up in the namespace at path and checks that it is
// the only link and that no IPv4 route points anywhere but lo.
func loopbackOnly(path string) error {
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		var names []string
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return fmt.Errorf("links %v, want only lo", names)
	}
	lo := links[0]
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.LinkIndex != lo.Attrs().Index {
			return fmt.Errorf("route %s leaves lo", r)
		}
	}
	return nil
}

func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFSRoot, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", BPFFSRoot, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount bpffs at %s: %w", BPFFSRoot, err)
	}
	return nil
}

func name() string {
	return fmt.Sprintf("membrane-test-%08x", rand.Uint32())
}

// RequireSupported skips the test (fails it in CI) when supported (a
// datapath's Supported) says the kernel lacks a feature or refused the
// probe for want of privilege; a probe that fails for another reason fails
// the test.
func RequireSupported(tb testing.TB, supported func() error) {
	tb.Helper()
	err := supported()
	switch {
	case err == nil:
	case errors.Is(err, unix.EPERM):
		testenv.Missing(tb, "needs root: the kernel refused the eBPF feature probe (operation not permitted)")
	case errors.Is(err, ebpf.ErrNotSupported):
		testenv.Missing(tb, err.Error())
	default:
		tb.Fatalf("feature probe failed: %v", err)
	}
}

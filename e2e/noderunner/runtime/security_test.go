//go:build linux

package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// privs runs the probe's privs report in a container with sec.
func (f *fixture) privs(t *testing.T, name string, sec Security) map[string]string {
	t.Helper()
	s := f.spec(t, name, "privs")
	s.Security = sec
	c := f.start(t, s)
	if code := waitDone(t, c); code != 0 {
		t.Fatalf("probe exited %d", code)
	}
	return keyValues(readLog(t, s.LogPath))
}

func capHex(t *testing.T, names ...string) string {
	t.Helper()
	mask, err := capabilityMask(names)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%016x", mask)
}

func TestCapabilities(t *testing.T) {
	f := newFixture(t)
	// A privileged container has what the runtime has (on a node: every
	// capability).
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var all string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			all = strings.TrimSpace(v)
		}
	}

	priv := f.privs(t, "privileged", Security{Privileged: true})
	if priv["capeff"] != all || priv["capbnd"] != all || priv["sys"] != "rw" {
		t.Errorf("privileged: %v; want every capability (%s) and a writable /sys", priv, all)
	}
	hostDevs, _ := os.ReadDir("/dev")
	if n, _ := strconv.Atoi(priv["devs"]); n != len(hostDevs) {
		t.Errorf("privileged: %s entries in /dev, the node has %d", priv["devs"], len(hostDevs))
	}

	limited := []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"}
	want := capHex(t, limited...)
	got := f.privs(t, "limited", Security{LimitCapabilities: true, Capabilities: limited})
	for _, k := range []string{"capeff", "capprm", "capbnd", "capinh"} {
		if got[k] != want {
			t.Errorf("limited: %s=%s, want %s", k, got[k], want)
		}
	}
	if got["sys"] != "ro" || got["devs"] == priv["devs"] {
		t.Errorf("limited: /sys %s with %s entries in /dev; want read-only and the minimal /dev", got["sys"], got["devs"])
	}

	none := f.privs(t, "none", Security{LimitCapabilities: true})
	if none["capeff"] != capHex(t) || none["capbnd"] != capHex(t) {
		t.Errorf("no capabilities: %v", none)
	}
}

// A HostToContainer mount sees what the host mounts below its source after
// the container started; a private one does not.
func TestMountPropagation(t *testing.T) {
	f := newFixture(t)
	src := t.TempDir()
	// A shared mount of its own, so that the host's mount events have
	// somewhere to propagate from.
	if err := unix.Mount(src, src, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(src, unix.MNT_DETACH) })
	if err := unix.Mount("", src, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(src, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(name, propagation string) (Spec, *Container) {
		s := f.spec(t, name, "watch", "/host/sub/mounted")
		s.Mounts = []Mount{{Source: src, Target: "/host", Propagation: propagation}}
		c := f.start(t, s)
		waitLog(t, s.LogPath, "ready")
		return s, c
	}
	slave, _ := start("host-to-container", PropagationHostToContainer)
	private, privateC := start("private", "")
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sub, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(sub, "mounted"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitLog(t, slave.LogPath, "seen")
	_ = privateC.Stop(0)
	for _, r := range readLog(t, private.LogPath) {
		if r.content == "seen" {
			t.Fatal("a private mount saw the host's later mount")
		}
	}
	// Nothing the containers mounted came back to the host.
	if mounted, _ := os.ReadDir(sub); len(mounted) != 1 {
		t.Fatalf("host's %s holds %d entries", sub, len(mounted))
	}
}

// Package bpftest gives datapath tests a fresh cgroup and a fresh bpffs pin
// directory, both removed when the test ends, failed or not.
package bpftest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/cgroups"
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

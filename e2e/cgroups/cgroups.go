// Package cgroups finds the cgroup v2 hierarchy and creates, empties and
// removes subtrees of it.
package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/bpf/hostfs"
)

// Root returns the mount point of the cgroup v2 hierarchy (the unified one
// on a hybrid system).
func Root() (string, error) {
	mounts, err := hostfs.Cgroup2Mounts()
	if err != nil {
		return "", err
	}
	if len(mounts) == 0 {
		return "", errors.New("no cgroup2 filesystem is mounted: mount one (mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1")
	}
	return mounts[0], nil
}

// killTimeout bounds how long Remove waits for a subtree to empty.
const killTimeout = 5 * time.Second

// Remove kills every process in the cgroup v2 subtree at path (through
// cgroup.kill, or by SIGKILLing each PID of cgroup.procs where the kernel
// lacks it), waits up to 5 s until the subtree is empty, and removes its
// directories bottom-up. A missing path is not an error.
func Remove(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	deadline := time.Now().Add(killTimeout)
	for {
		dirs, err := cgroupDirs(path)
		if err != nil {
			return fmt.Errorf("kill cgroup %s: %w", path, err)
		}
		pids, err := cgroupPIDs(dirs)
		if err != nil {
			return fmt.Errorf("kill cgroup %s: %w", path, err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %d processes still there after %s", path, len(pids), killTimeout)
		}
		if err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0); err != nil {
			for _, pid := range pids {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		dirs, err := cgroupDirs(path)
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		err = removeDirs(dirs)
		if err == nil {
			return nil
		}
		// EBUSY while exiting tasks leave the cgroup.
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupDirs lists the subtree at root, deepest first.
func cgroupDirs(root string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.SortFunc(dirs, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return dirs, err
}

func cgroupPIDs(dirs []string) ([]int, error) {
	var pids []int
	for _, dir := range dirs {
		raw, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, f := range bytes.Fields(raw) {
			pid, err := strconv.Atoi(string(f))
			if err != nil {
				return nil, fmt.Errorf("parse %s/cgroup.procs: %w", dir, err)
			}
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func removeDirs(dirs []string) error {
	for _, dir := range dirs {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("rmdir %s: %w", dir, err)
		}
	}
	return nil
}

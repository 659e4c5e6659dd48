// Package cgroups finds the cgroup v2 hierarchy and creates, empties and
// removes subtrees of it.
package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Root returns the mount point of the cgroup v2 hierarchy (the unified one
// on a hybrid system).
func Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fields := strings.Fields(right); len(fields) > 0 && fields[0] == "cgroup2" {
			if lf := strings.Fields(left); len(lf) > 4 {
				return lf[4], nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	return "", errors.New("find cgroup2 mount: none mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")
}

// Remove kills every process in the subtree at dir, waits for them to go
// (bounded), and removes the directories bottom-up. A missing dir is fine.
func Remove(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := Kill(dir); err != nil {
		return err
	}
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		var lastErr error
		for range 50 {
			lastErr = os.Remove(d)
			if lastErr == nil || errors.Is(lastErr, os.ErrNotExist) {
				lastErr = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if lastErr != nil {
			return fmt.Errorf("remove cgroup %s: %w", d, lastErr)
		}
	}
	return nil
}

// Kill ends every process in the subtree at dir and waits (up to 10 s) until
// it is empty.
func Kill(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		populated, err := Populated(dir)
		if err != nil {
			return err
		}
		if !populated {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: processes still running after 10s", dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Populated reports whether any process runs in the subtree at dir.
func Populated(dir string) (bool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read cgroup %s events: %w", dir, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "populated 1" {
			return true, nil
		}
	}
	return false, nil
}

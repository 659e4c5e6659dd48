// Package pin manages the bpffs directories the datapath pins maps and
// links in.
package pin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// EnsureDir creates dir, which must be on bpffs.
func EnsureDir(dir string) error {
	// Check the nearest existing ancestor first: MkdirAll on a bare
	// /sys/fs/bpf (sysfs) fails with a confusing error.
	existing := dir
	for {
		if _, err := os.Stat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	if err := Check(existing); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	return nil
}

// RemoveIfEmpty removes dir unless something is still pinned in it; a
// missing dir is fine.
func RemoveIfEmpty(dir string) error {
	_, err := RemoveEmpty(dir)
	return err
}

// RemoveEmpty is RemoveIfEmpty saying whether it removed dir.
func RemoveEmpty(dir string) (removed bool, err error) {
	err = os.Remove(dir)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST):
		return false, nil
	}
	return false, err
}

// Check fails unless path is on bpffs.
func Check(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", path)
	}
	return nil
}

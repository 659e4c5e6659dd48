// Package statefile writes the files the agent keeps across restarts.
package statefile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write writes data to path, readable by its owner only, through a
// temporary file next to it that is synced and renamed over path; the
// directory (created 0700 if missing) is synced too, so a reader, or the
// agent after a crash, finds the previous file or the new one, never a
// mix. On error no temporary file is left behind.
func Write(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename survives a crash once the directory is synced (best
	// effort: some file systems refuse to sync a directory).
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// File modes of the installed files.
const (
	ConfigMode fs.FileMode = 0o644
	BinaryMode fs.FileMode = 0o755
)

// WriteConfig installs conf as dir/name, mode 0644, creating dir when it is
// missing. The runtime never reads a partial file: conf goes to a temporary
// file in dir (named so that no runtime loads it), is synced, then renamed
// over dir/name. When dir/name already holds conf, nothing is written and
// changed is false.
func WriteConfig(dir, name string, conf []byte) (changed bool, err error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	path := filepath.Join(dir, name)
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, conf) {
		if err := ensureMode(path, ConfigMode); err != nil {
			return false, err
		}
		return false, nil
	}
	if err := writeAtomic(dir, name, ConfigMode, bytes.NewReader(conf)); err != nil {
		return false, err
	}
	return true, nil
}

// CopyBinary installs the executable src as its base name in dir, mode
// 0755, creating dir when it is missing, the same way as WriteConfig: a
// running copy keeps its file, and a runtime finds either the old binary or
// the new one. When the file in dir already has src's content (or is src),
// nothing is written and changed is false.
func CopyBinary(src, dir string) (changed bool, err error) {
	name := filepath.Base(src)
	if err := checkName(name); err != nil {
		return false, err
	}
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("plugin binary: %w", err)
	}
	defer in.Close()
	srcInfo, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("plugin binary: %w", err)
	}
	if !srcInfo.Mode().IsRegular() {
		return false, fmt.Errorf("plugin binary %s: not a regular file", src)
	}
	dst := filepath.Join(dir, name)
	same, err := sameContent(in, srcInfo, dst)
	if err != nil {
		return false, err
	}
	if same {
		return false, ensureMode(dst, BinaryMode)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("plugin binary %s: %w", src, err)
	}
	if err := writeAtomic(dir, name, BinaryMode, in); err != nil {
		return false, err
	}
	return true, nil
}

// RemoveConfig removes dir/name and reports whether it was there.
func RemoveConfig(dir, name string) (removed bool, err error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	err = os.Remove(filepath.Join(dir, name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// checkName accepts a plain file name.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("file name %q: want a name without directories", name)
	}
	return nil
}

// sameContent reports whether the file at dst has the content of in
// (positioned at its start), without reading either in full when their
// sizes differ.
func sameContent(in *os.File, srcInfo fs.FileInfo, dst string) (bool, error) {
	out, err := os.Open(dst)
	if err != nil {
		return false, nil // missing or unreadable: (re)place it
	}
	defer out.Close()
	dstInfo, err := out.Stat()
	if err != nil || !dstInfo.Mode().IsRegular() || dstInfo.Size() != srcInfo.Size() {
		return false, nil
	}
	if os.SameFile(srcInfo, dstInfo) {
		return true, nil
	}
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		n, errA := io.ReadFull(in, a)
		m, errB := io.ReadFull(out, b[:n])
		if m != n || !bytes.Equal(a[:n], b[:m]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return true, nil // equal sizes, every byte compared
		}
		if errA != nil {
			return false, fmt.Errorf("read %s: %w", in.Name(), errA)
		}
		if errB != nil {
			return false, nil
		}
	}
}

// ensureMode sets path's permission bits to mode when they differ.
func ensureMode(path string, mode fs.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() == mode {
		return nil
	}
	return os.Chmod(path, mode)
}

// writeAtomic writes r to dir/name with mode through a temporary file in
// dir, synced and renamed over dir/name; on error it leaves no temporary
// file behind. Its errors name dir/name, never the temporary file, so a
// retried failure reads the same each time.
func writeAtomic(dir, name string, mode fs.FileMode, r io.Reader) error {
	dst := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	// A leading dot and a .tmp suffix: no CNI runtime loads it as a
	// configuration (.conf, .conflist, .json) or runs it.
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, cause(err))
	}
	if err := fill(tmp, mode, r); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("install %s: %w", dst, cause(err))
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("install %s: %w", dst, cause(err))
	}
	// The rename itself survives a crash once the directory is synced
	// (best effort: some filesystems refuse to sync a directory).
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// fill writes r into the new file f with mode, syncs and closes it.
func fill(f *os.File, mode fs.FileMode, r io.Reader) error {
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// cause strips the file names from a file system error.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// SetAsideSuffix ends the name of another CNI configuration SetAside
// renamed; RestoreSetAside takes it off again.
const SetAsideSuffix = ".membrane_bak"

// isConfigName reports whether a runtime reads a file of this name as a
// CNI configuration: libcni's extensions, hidden files included
// (writeAtomic's temporary files end in .tmp).
func isConfigName(name string) bool {
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return true
	}
	return false
}

// SetAside renames every CNI configuration in dir but keep to its name
// with SetAsideSuffix, so that the runtime uses keep whatever sorts before
// it; a file set aside earlier under the same name is replaced. It returns
// the names it renamed, in name order.
func SetAside(dir, keep string) ([]string, error) {
	if err := checkName(keep); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var (
		moved []string
		errs  []error
	)
	for _, e := range entries {
		name := e.Name()
		if name == keep || e.IsDir() || !isConfigName(name) {
			continue
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+SetAsideSuffix)); err != nil {
			errs = append(errs, fmt.Errorf("set %s aside: %w", filepath.Join(dir, name), cause(err)))
			continue
		}
		moved = append(moved, name)
	}
	return moved, errors.Join(errs...)
}

// RestoreSetAside renames the configurations SetAside set aside in dir
// back, except where a file of the original name is there again (the
// renamed one then stays). It returns the names it restored, in name
// order; a missing dir holds none.
func RestoreSetAside(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var (
		restored []string
		errs     []error
	)
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), SetAsideSuffix)
		if !ok || e.IsDir() || !isConfigName(name) {
			continue
		}
		from, to := filepath.Join(dir, e.Name()), filepath.Join(dir, name)
		err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
		switch {
		case errors.Is(err, unix.EEXIST):
			errs = append(errs, fmt.Errorf("restore %s: a file of that name is there again; %s stays", to, from))
		case err != nil:
			errs = append(errs, fmt.Errorf("restore %s: %w", to, err))
		default:
			restored = append(restored, name)
		}
	}
	return restored, errors.Join(errs...)
}

package install

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dirNames lists dir's entries.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// checkFile checks path's content and permission bits.
func checkFile(t *testing.T, path string, want []byte, mode fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", path, got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
}

func TestWriteConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // created on the first write
	path := filepath.Join(dir, "05-membrane.conflist")
	changed, err := WriteConfig(dir, "05-membrane.conflist", []byte("one\n"))
	if err != nil || !changed {
		t.Fatalf("first write: changed %v, %v", changed, err)
	}
	checkFile(t, path, []byte("one\n"), ConfigMode)

	before, _ := os.Stat(path)
	changed, err = WriteConfig(dir, "05-membrane.conflist", []byte("one\n"))
	if err != nil || changed {
		t.Fatalf("same content: changed %v, %v", changed, err)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Error("same content: the file was replaced")
	}

	changed, err = WriteConfig(dir, "05-membrane.conflist", []byte("two\n"))
	if err != nil || !changed {
		t.Fatalf("new content: changed %v, %v", changed, err)
	}
	checkFile(t, path, []byte("two\n"), ConfigMode)

	// Someone else's edit, or mode, is put back.
	if err := os.WriteFile(path, []byte("edited"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err = WriteConfig(dir, "05-membrane.conflist", []byte("two\n")); err != nil || !changed {
		t.Fatalf("after an edit: changed %v, %v", changed, err)
	}
	checkFile(t, path, []byte("two\n"), ConfigMode)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = WriteConfig(dir, "05-membrane.conflist", []byte("two\n")); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, []byte("two\n"), ConfigMode)

	if got := dirNames(t, dir); len(got) != 1 || got[0] != "05-membrane.conflist" {
		t.Errorf("dir holds %q, want only the conflist", got)
	}
}

func TestWriteConfigErrorsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	// A directory in the way: the rename fails after the temporary file
	// was written.
	if err := os.MkdirAll(filepath.Join(dir, "05-membrane.conflist", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err1 := WriteConfig(dir, "05-membrane.conflist", []byte("conf"))
	if err1 == nil {
		t.Fatal("WriteConfig over a directory: no error")
	}
	// The error names the file, not the temporary one: a retry's reads
	// the same.
	_, err2 := WriteConfig(dir, "05-membrane.conflist", []byte("conf"))
	if want := "install " + filepath.Join(dir, "05-membrane.conflist") + ": "; !strings.HasPrefix(err1.Error(), want) || err2 == nil || err1.Error() != err2.Error() {
		t.Errorf("errors %q and %v, want the same twice, starting %q", err1, err2, want)
	}
	if got := dirNames(t, dir); len(got) != 1 {
		t.Errorf("dir holds %q after a failed write, want only the directory in the way", got)
	}

	// dir is a file.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteConfig(file, "05-membrane.conflist", []byte("conf")); err == nil {
		t.Fatal("WriteConfig into a file: no error")
	}

	for _, bad := range []string{"", ".", "..", "a/b", "../05-membrane.conflist"} {
		if _, err := WriteConfig(dir, bad, []byte("conf")); err == nil || !strings.Contains(err.Error(), "file name") {
			t.Errorf("WriteConfig(%q) = %v, want a file name error", bad, err)
		}
	}
	if got := dirNames(t, dir); len(got) != 2 {
		t.Errorf("dir holds %q, want the directory in the way and the file", got)
	}
}

func TestCopyBinary(t *testing.T) {
	src := filepath.Join(t.TempDir(), "membrane-cni")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v1\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	dst := filepath.Join(bin, "membrane-cni")
	changed, err := CopyBinary(src, bin)
	if err != nil || !changed {
		t.Fatalf("first copy: changed %v, %v", changed, err)
	}
	checkFile(t, dst, []byte("#!/bin/sh\necho v1\n"), BinaryMode)

	// A running plugin keeps its file: a new version replaces the
	// directory entry, it never writes into the old file.
	old, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	changed, err = CopyBinary(src, bin)
	if err != nil || changed {
		t.Fatalf("same content: changed %v, %v", changed, err)
	}
	// Same size, other content: compared byte by byte.
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v2\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	changed, err = CopyBinary(src, bin)
	if err != nil || !changed {
		t.Fatalf("new version: changed %v, %v", changed, err)
	}
	checkFile(t, dst, []byte("#!/bin/sh\necho v2\n"), BinaryMode)
	buf := make([]byte, 64)
	n, _ := old.ReadAt(buf, 0)
	if string(buf[:n]) != "#!/bin/sh\necho v1\n" {
		t.Errorf("the old file now holds %q: it was written into", buf[:n])
	}

	// A larger binary, over several compare buffers.
	big := bytes.Repeat([]byte("membrane"), 40000)
	if err := os.WriteFile(src, big, 0o755); err != nil {
		t.Fatal(err)
	}
	if changed, err = CopyBinary(src, bin); err != nil || !changed {
		t.Fatalf("large binary: changed %v, %v", changed, err)
	}
	if changed, err = CopyBinary(src, bin); err != nil || changed {
		t.Fatalf("large binary again: changed %v, %v", changed, err)
	}
	big[len(big)-1] = 'X'
	if err := os.WriteFile(src, big, 0o755); err != nil {
		t.Fatal(err)
	}
	if changed, err = CopyBinary(src, bin); err != nil || !changed {
		t.Fatalf("large binary, last byte changed: changed %v, %v", changed, err)
	}
	checkFile(t, dst, big, BinaryMode)

	// The binary already in place (the source is the installed file).
	if changed, err = CopyBinary(dst, bin); err != nil || changed {
		t.Fatalf("source is the destination: changed %v, %v", changed, err)
	}
	if got := dirNames(t, bin); len(got) != 1 || got[0] != "membrane-cni" {
		t.Errorf("bin holds %q, want only membrane-cni", got)
	}
}

func TestCopyBinaryErrorsLeaveNothing(t *testing.T) {
	bin := t.TempDir()
	if _, err := CopyBinary(filepath.Join(t.TempDir(), "membrane-cni"), bin); err == nil || !strings.Contains(err.Error(), "plugin binary") {
		t.Errorf("missing source: %v, want a plugin binary error", err)
	}
	if _, err := CopyBinary(t.TempDir(), bin); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("source is a directory: %v, want not a regular file", err)
	}
	src := filepath.Join(t.TempDir(), "membrane-cni")
	if err := os.WriteFile(src, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(bin, "membrane-cni", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyBinary(src, bin); err == nil {
		t.Fatal("CopyBinary over a directory: no error")
	}
	if got := dirNames(t, bin); len(got) != 1 {
		t.Errorf("bin holds %q after failed copies, want only the directory in the way", got)
	}
}

func TestRemoveConfig(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"05-membrane.conflist", "10-other.conflist"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveConfig(dir, "05-membrane.conflist")
	if err != nil || !removed {
		t.Fatalf("remove: removed %v, %v", removed, err)
	}
	if got := dirNames(t, dir); len(got) != 1 || got[0] != "10-other.conflist" {
		t.Errorf("dir holds %q, want only the other conflist", got)
	}
	removed, err = RemoveConfig(dir, "05-membrane.conflist")
	if err != nil || removed {
		t.Fatalf("remove again: removed %v, %v; want a no-op", removed, err)
	}
	if removed, err = RemoveConfig(filepath.Join(dir, "missing"), "05-membrane.conflist"); err != nil || removed {
		t.Fatalf("missing dir: removed %v, %v; want a no-op", removed, err)
	}
	if _, err := RemoveConfig(dir, "../10-other.conflist"); err == nil {
		t.Error("RemoveConfig with a path: no error")
	}
}

func TestSetAsideAndRestore(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"00-multus.conf":        "a",
		"10-flannel.conflist":   "b",
		"99-loopback.json":      "c",
		"05-membrane.conflist":  "ours",
		".05-membrane.x.tmp":    "temporary",
		".hidden.conf":          "hidden",
		"README":                "not a config",
		"87-podman.conflist.bk": "not a config either",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	moved, err := SetAside(dir, "05-membrane.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".hidden.conf", "00-multus.conf", "10-flannel.conflist", "99-loopback.json"}; !slices.Equal(moved, want) {
		t.Errorf("set aside %v, want %v", moved, want)
	}
	want := []string{".05-membrane.x.tmp", ".hidden.conf.membrane_bak", "00-multus.conf.membrane_bak", "05-membrane.conflist",
		"10-flannel.conflist.membrane_bak", "87-podman.conflist.bk", "99-loopback.json.membrane_bak", "README", "sub.conf"}
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("after SetAside: %v, want %v", got, want)
	}
	// Nothing more to set aside.
	if moved, err := SetAside(dir, "05-membrane.conflist"); err != nil || len(moved) != 0 {
		t.Errorf("second SetAside: %v, %v", moved, err)
	}

	// flannel wrote its configuration again meanwhile: that backup stays.
	if err := os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	restored, err := RestoreSetAside(dir)
	if err == nil || !strings.Contains(err.Error(), "10-flannel.conflist: a file of that name is there again") {
		t.Errorf("restore over a new file: %v", err)
	}
	if want := []string{".hidden.conf", "00-multus.conf", "99-loopback.json"}; !slices.Equal(restored, want) {
		t.Errorf("restored %v, want %v", restored, want)
	}
	checkFile(t, filepath.Join(dir, "00-multus.conf"), []byte("a"), 0o644)
	checkFile(t, filepath.Join(dir, "10-flannel.conflist"), []byte("new"), 0o644)
	checkFile(t, filepath.Join(dir, "10-flannel.conflist.membrane_bak"), []byte("b"), 0o644)
	checkFile(t, filepath.Join(dir, "05-membrane.conflist"), []byte("ours"), 0o644)

	if _, err := SetAside(dir, "../x.conflist"); err == nil {
		t.Error("SetAside with a path for keep: no error")
	}
	if restored, err := RestoreSetAside(filepath.Join(dir, "missing")); err != nil || len(restored) != 0 {
		t.Errorf("RestoreSetAside of a missing dir: %v, %v", restored, err)
	}
}

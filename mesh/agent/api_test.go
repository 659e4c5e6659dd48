package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenRootOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	// A directory left too open is closed again.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(path, nil, 0o644); err != nil { // stale
		t.Fatal(err)
	}
	ln, err := listenRootOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is not a socket", path)
	}
}

func TestListenRootOnlyRefusesOthersDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory away")
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := listenRootOnly(filepath.Join(dir, "api.sock"))
	if err == nil || !strings.Contains(err.Error(), "not a directory owned by") {
		t.Fatalf("got %v, want a refusal", err)
	}
}

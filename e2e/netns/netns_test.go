package netns

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

func TestCreateDoRemove(t *testing.T) {
	testenv.RequireRoot(t, "creates network namespaces")
	var root, inside unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &root); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ns")
	if err := Create(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(path) })
	if err := Do(path, func() error { return unix.Stat("/proc/thread-self/ns/net", &inside) }); err != nil {
		t.Fatal(err)
	}
	var pinned unix.Stat_t
	if err := unix.Stat(path, &pinned); err != nil {
		t.Fatal(err)
	}
	if inside.Ino == root.Ino || inside.Ino != pinned.Ino {
		t.Fatalf("namespace inodes: root %d, inside %d, pinned %d", root.Ino, inside.Ino, pinned.Ino)
	}
	var after unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != root.Ino {
		t.Fatalf("the process's namespace changed: %d, was %d", after.Ino, root.Ino)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("namespace file still there: %v", err)
	}
}

// Package nstest creates network namespaces for tests and removes them when
// the test ends.
package nstest

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// RequireRoot skips the test (fails it in CI) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "creates network namespaces")
}

// New creates a persistent network namespace that is removed when the test
// ends, unless Delete removed it before.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(n.Path()); errors.Is(err, fs.ErrNotExist) {
			return // already deleted
		}
		Delete(t, n)
	})
	return n
}

// Delete closes and unmounts n now, destroying the namespace and every
// interface in it.
func Delete(t testing.TB, n ns.NetNS) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Errorf("close netns: %v", err)
	}
	if err := testutils.UnmountNS(n); err != nil {
		t.Errorf("unmount netns: %v", err)
	}
}

// Do runs fn in n's network namespace and fails the test on error.
func Do(t testing.TB, n ns.NetNS, fn func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

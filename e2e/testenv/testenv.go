// Package testenv decides, in one place for the whole repository, what a
// test does when its environment lacks something it needs: a tool (Envoy,
// nft), a kernel feature (tcx, nft_tproxy) or a privilege (root). Where a
// developer runs the tests it skips, naming what is missing; in CI (the
// environment variable CI set to true, as CI systems do) it fails with the
// same message, because CI provides all of them and a skip there would
// hide a test that never ran.
//
// A skip for -short is the user asking for unit tests only, not something
// missing: it stays a plain t.Skip.
//
// The package lives under e2e/ beside the other test-support packages that
// test code in bpf/, mesh/ and xds/ already imports (e2e/netns,
// e2e/cgroups), and imports only the standard library, so any test in the
// module can use it without an import cycle.
package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Missing ends tb because the environment lacks what it needs. what names
// the missing tool, kernel feature or privilege, and where it helps how to
// get it: "needs root: creates network namespaces", "kernel lacks tcx
// (Linux 6.6+)", "envoy not installed: run `make tools`". In CI the test
// fails with that message; elsewhere it is skipped with it.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if inCI() {
		tb.Fatalf("%s (CI=%s: in CI a missing tool, kernel feature or privilege fails the test instead of skipping it)", what, os.Getenv("CI"))
	}
	tb.Skip(what)
}

// RequireRoot ends tb through Missing unless it runs as root; why says
// what root is needed for.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "needs root: "+why)
	}
}

// inCI reports whether CI is set to a true value (1, t, true, TRUE, ...).
// It is the only place the tests read CI.
func inCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// ToolsDir is where `make tools` installs the pinned tools and images:
// $MEMBRANE_CACHE, ~/.cache/membrane by default.
func ToolsDir(tb testing.TB) string {
	tb.Helper()
	if dir := os.Getenv("MEMBRANE_CACHE"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		Missing(tb, fmt.Sprintf("pinned tools not installed: run `make tools` (no home directory: %v)", err))
	}
	return filepath.Join(home, ".cache", "membrane")
}

// Tool is the path of the pinned tool name (envoy, helm, …) that `make
// tools` installs in ToolsDir/bin; the test ends through Missing when it is
// not installed.
func Tool(tb testing.TB, name string) string {
	tb.Helper()
	path := filepath.Join(ToolsDir(tb), "bin", name)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		Missing(tb, fmt.Sprintf("%s not installed: run `make tools` (%s not found)", name, path))
	} else if err != nil {
		tb.Fatal(err)
	}
	return path
}

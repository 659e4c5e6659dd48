// Package helmtest finds the pinned helm for tests that run it.
package helmtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// ToolsDir is where `make tools` installs: $MEMBRANE_CACHE,
// ~/.cache/membrane by default.
func ToolsDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("MEMBRANE_CACHE"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("helm not installed: run `make tools` (no home directory: %v)", err))
	}
	return filepath.Join(home, ".cache", "membrane")
}

// Binary is the helm `make tools` installs: ToolsDir/bin/helm. The test is
// skipped when it is not installed, and fails then in CI.
func Binary(t testing.TB) string {
	t.Helper()
	path := filepath.Join(ToolsDir(t), "bin", "helm")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		testenv.Missing(t, fmt.Sprintf("helm not installed: run `make tools` (%s not found)", path))
	} else if err != nil {
		t.Fatal(err)
	}
	return path
}

// Package envoytest finds the pinned Envoy for tests that run it.
package envoytest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// Binary is the Envoy `make tools` installs: $MEMBRANE_CACHE/bin/envoy,
// ~/.cache/membrane/bin/envoy by default. The test is skipped when it is
// not installed, and fails then in CI.
func Binary(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("MEMBRANE_CACHE")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			testenv.Missing(t, fmt.Sprintf("envoy not installed: run `make tools` (no home directory: %v)", err))
		}
		dir = filepath.Join(home, ".cache", "membrane")
	}
	path := filepath.Join(dir, "bin", "envoy")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		testenv.Missing(t, fmt.Sprintf("envoy not installed: run `make tools` (%s not found)", path))
	} else if err != nil {
		t.Fatal(err)
	}
	return path
}

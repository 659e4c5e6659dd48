package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDevRunsDevBinary: `membrane dev …` hands its arguments, flags
// included, to membrane-dev and keeps its exit status.
func TestDevRunsDevBinary(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"$@\"\n[ \"$1\" = fail ] && exit 3\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, devBinary), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"membrane", "-v", "dev", "up", "--name", "x", "--nodes=3"}, &out, &errOut); err != nil {
		t.Fatalf("dev up: %v (stderr %q)", err, errOut.String())
	}
	if got, want := out.String(), "-v up --name x --nodes=3\n"; got != want {
		t.Errorf("%s got %q, want %q", devBinary, got, want)
	}
	err := run(context.Background(), []string{"membrane", "dev", "fail"}, &out, &errOut)
	var failed errDevFailed
	if !errors.As(err, &failed) || failed.code != 3 {
		t.Errorf("dev fail: got %v, want exit status 3", err)
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

func TestRun(t *testing.T) {
	in := filepath.Join("..", "bench", "summary", "testdata", "rows.jsonl")
	var out, errOut bytes.Buffer
	if err := run([]string{in}, &out, &errOut); err != nil {
		t.Fatalf("run: %v (%s)", err, errOut.String())
	}
	want, err := os.ReadFile(filepath.Join("..", "bench", "summary", "testdata", "rows.table"))
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("output:\n%s\nwant the golden table of package summary:\n%s", out.String(), want)
	}
}

// TestRunMissing: a run whose benchmarks all failed before recording
// anything leaves no file; the table says so.
func TestRunMissing(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{filepath.Join(t.TempDir(), "none.jsonl")}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := summary.Table(&want, nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != want.String() {
		t.Errorf("output %q, want %q", out.String(), want.String())
	}
}

func TestRunErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"a", "b"}, {bad}} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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

func TestRunFailed(t *testing.T) {
	log := filepath.Join(t.TempDir(), "go-test.log")
	out := `goos: linux
BenchmarkL7AddedLatency-2   	       1	         0 ns/op	       212.0 membrane-added-p50-µs
--- FAIL: BenchmarkGatewayRoutes
    gateway_bench_test.go:99: no route served
--- FAIL: BenchmarkPolicyChangeToEnforced/identities=10
        policy_bench_test.go:900: no change measured
--- FAIL: BenchmarkPolicyChangeToEnforced
--- FAIL: TestNotABenchmark (0.00s)
FAIL
`
	if err := os.WriteFile(log, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join("..", "bench", "summary", "testdata", "rows.jsonl")
	var got, errOut bytes.Buffer
	if err := run([]string{"-gotest", log, in}, &got, &errOut); err != nil {
		t.Fatalf("run: %v (%s)", err, errOut.String())
	}
	want := "Failed (see go test's output above): BenchmarkGatewayRoutes, BenchmarkPolicyChangeToEnforced/identities=10, BenchmarkPolicyChangeToEnforced.\n"
	if !strings.HasSuffix(got.String(), want) {
		t.Errorf("output ends\n%s\nwant\n%s", got.String()[max(0, got.Len()-300):], want)
	}

	// Nothing failed: no line.
	if err := os.WriteFile(log, []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if err := run([]string{"-gotest", log, in}, &got, &errOut); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.String(), "Failed") {
		t.Errorf("a failure where none was: %s", got.String())
	}
}

func TestRunErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"a", "b"}, {bad}, {"-gotest", filepath.Join(t.TempDir(), "none.log"), bad + "x"}} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}

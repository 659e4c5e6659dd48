package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The streams in testdata were recorded from `go test -json` on the module
// in testdata/demo: package a has a TestMain that prints, a passing, a
// skipped and a failing test, and subtests that pass, skip and fail; b
// passes with a multi-line skip and a SkipNow; c does not build; d has no
// tests. In testdata/demo: `go test -json -count=1 ./... > ../mixed.json`,
// `go test -json -count=1 -v ./a ./b > ../verbose.json`,
// `go test -json -count=1 -run TestOK ./b ./d > ../pass.json`.
func TestReport(t *testing.T) {
	for _, tc := range []struct {
		in      string
		verbose bool
		out     string
	}{
		{"mixed.json", false, "mixed.out"},
		{"verbose.json", true, "verbose.out"},
		{"pass.json", false, "pass.out"},
	} {
		t.Run(tc.out, func(t *testing.T) {
			in, err := os.Open(filepath.Join("testdata", tc.in))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var got bytes.Buffer
			if err := newReporter(&got, tc.verbose, "example.com/demo").read(in); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.out)
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

// A test binary that dies mid-test leaves its package without a result:
// what it printed is shown and the run fails.
func TestReportUnfinished(t *testing.T) {
	stream := `{"Action":"start","Package":"m/p"}
{"Action":"run","Package":"m/p","Test":"TestX"}
{"Action":"output","Package":"m/p","Test":"TestX","Output":"=== RUN   TestX\n"}
{"Action":"output","Package":"m/p","Test":"TestX","Output":"fatal error: out of memory\n"}
`
	var got bytes.Buffer
	r := newReporter(&got, false, "m")
	if err := r.read(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	want := "fatal error: out of memory\nFAIL\nno tests skipped\ntests: 0 passed, 0 failed, 0 skipped\n"
	if got.String() != want || !r.failed {
		t.Errorf("output %q, failed %v; want %q, failed", got.String(), r.failed, want)
	}
}

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		skips []skip
		want  string
	}{
		{nil, "no tests skipped"},
		{[]skip{{"x.TestA", "needs root: y"}}, "skipped 1 test: x.TestA (needs root: y)"},
		{
			[]skip{{"z.TestC", "kernel lacks tcx"}, {"x.TestB", "needs root: y"}, {"x.TestA", "needs root: y"}},
			"skipped 3 tests: x.TestA, x.TestB (needs root: y); z.TestC (kernel lacks tcx)",
		},
	} {
		if got := summary(tc.skips); got != tc.want {
			t.Errorf("summary(%v) = %q, want %q", tc.skips, got, tc.want)
		}
	}
}

// fakeGo writes a go command that records its arguments, prints stream
// and exits with status.
func fakeGo(t *testing.T, stream string, status int) (goBin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	src, err := filepath.Abs(filepath.Join("testdata", stream))
	if err != nil {
		t.Fatal(err)
	}
	goBin = filepath.Join(dir, "go")
	script := "#!/bin/sh\necho \"$@\" > " + argsFile + "\ncat " + src + "\nexit " + string(rune('0'+status)) + "\n"
	if err := os.WriteFile(goBin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goBin, argsFile
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stream   string
		status   int
		wantExit int // 0: run returns nil
		wantLast string
	}{
		{"go test passes", "pass.json", 0, 0, "no tests skipped"},
		{"go test fails", "mixed.json", 1, 1, "skipped 4 tests: "},
		{"go test exit status kept", "pass.json", 3, 3, "no tests skipped"},
		{"a failure with exit status 0", "mixed.json", 0, 1, "skipped 4 tests: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goBin, argsFile := fakeGo(t, tc.stream, tc.status)
			var stdout, stderr bytes.Buffer
			err := run([]string{"-go", goBin, "--", "-count=1", "-short", "./..."}, &stdout, &stderr)
			var exit exitCode
			switch {
			case tc.wantExit == 0 && err != nil:
				t.Fatalf("run: %v", err)
			case tc.wantExit != 0 && (!errors.As(err, &exit) || int(exit) != tc.wantExit):
				t.Fatalf("run: %v, want exit status %d", err, tc.wantExit)
			}
			args, err := os.ReadFile(argsFile)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.TrimSpace(string(args)), "test -json -count=1 -short ./..."; got != want {
				t.Errorf("go ran with %q, want %q", got, want)
			}
			// The skip summary, then the count of tests by result.
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) < 2 {
				t.Fatalf("output %q: want a skip summary and a count", stdout.String())
			}
			if got := lines[len(lines)-2]; !strings.HasPrefix(got, tc.wantLast) {
				t.Errorf("summary line %q, want it to start with %q", got, tc.wantLast)
			}
			if count := lines[len(lines)-1]; !countLine.MatchString(count) {
				t.Errorf("last line %q, want `tests: N passed, N failed, N skipped`", count)
			}
		})
	}
}

var countLine = regexp.MustCompile(`^tests: \d+ passed, \d+ failed, \d+ skipped$`)

func TestModulePath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "go.mod")
	if err := os.WriteFile(path, []byte("// a comment\nmodule \"example.com/m\"\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := modulePath(path); got != "example.com/m" {
		t.Errorf("modulePath = %q", got)
	}
	if got := modulePath(filepath.Join(dir, "none")); got != "" {
		t.Errorf("modulePath of a missing file = %q", got)
	}
}

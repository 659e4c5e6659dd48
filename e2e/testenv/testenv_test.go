package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records how Missing ended the test. Like testing.T, Skip and
// Fatalf stop the calling goroutine.
type fakeTB struct {
	testing.TB // nil: any method Missing should not call panics
	skipped    string
	failed     string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a fakeTB on its own goroutine, as the testing package
// runs a test, and returns what it recorded.
func run(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestMissing(t *testing.T) {
	const what = "kernel lacks tcx (Linux 6.6+)"
	for _, tc := range []struct {
		ci     string
		failCI bool
	}{
		{"", false}, {"false", false}, {"0", false}, {"yes-please", false},
		{"true", true}, {"1", true}, {"TRUE", true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := run(func(tb testing.TB) { Missing(tb, what) })
			switch {
			case tc.failCI && (f.failed == "" || f.skipped != ""):
				t.Fatalf("want a failure, got skipped %q, failed %q", f.skipped, f.failed)
			case tc.failCI && !strings.HasPrefix(f.failed, what+" (CI="+tc.ci+": "):
				t.Fatalf("failure %q does not start with what is missing and CI", f.failed)
			case !tc.failCI && (f.skipped != what || f.failed != ""):
				t.Fatalf("want skip %q, got skipped %q, failed %q", what, f.skipped, f.failed)
			}
		})
	}
}

func TestRequireRoot(t *testing.T) {
	t.Setenv("CI", "")
	f := run(func(tb testing.TB) { RequireRoot(tb, "creates network namespaces") })
	if os.Geteuid() == 0 {
		if f.skipped != "" || f.failed != "" {
			t.Fatalf("as root: skipped %q, failed %q", f.skipped, f.failed)
		}
		return
	}
	if f.skipped != "needs root: creates network namespaces" {
		t.Fatalf("not root: skipped %q, failed %q", f.skipped, f.failed)
	}
}

// childEnv makes TestMissingChild call Missing; TestMissingRealT sets it
// when it runs this test binary again.
const childEnv = "MEMBRANE_TESTENV_CHILD"

// TestMissingChild is the test TestMissingRealT runs in a subprocess;
// run directly, it does nothing.
func TestMissingChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		return
	}
	Missing(t, "frobnicator not installed")
	t.Error("Missing returned")
}

// TestMissingRealT checks both branches on a real testing.T, as go test
// reports them: the test binary runs TestMissingChild with and without
// CI=true.
func TestMissingRealT(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantExit int
		want     []string
	}{
		{"", 0, []string{"frobnicator not installed", "--- SKIP: TestMissingChild"}},
		{"true", 1, []string{"frobnicator not installed (CI=true: ", "--- FAIL: TestMissingChild"}},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMissingChild$", "-test.v")
			cmd.Env = append(os.Environ(), childEnv+"=1", "CI="+tc.ci)
			out, err := cmd.CombinedOutput()
			exit := 0
			if err != nil {
				ee, ok := err.(*exec.ExitError)
				if !ok {
					t.Fatal(err)
				}
				exit = ee.ExitCode()
			}
			if exit != tc.wantExit {
				t.Errorf("exit status %d, want %d", exit, tc.wantExit)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

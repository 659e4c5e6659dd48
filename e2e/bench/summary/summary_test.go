package summary

import (
	"bytes"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestTable prints testdata/rows.jsonl (a benchmark that ran twice among
// them: its later row counts) and compares with testdata/rows.table.
func TestTable(t *testing.T) {
	rows, err := ReadFile(filepath.Join("testdata", "rows.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := Table(&got, rows); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "rows.table")
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
		t.Errorf("table (-want +got), go test -update rewrites it:\n%s", diff)
	}
}

func TestTableEmpty(t *testing.T) {
	var got bytes.Buffer
	if err := Table(&got, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got.String(), "No benchmark recorded a figure.") {
		t.Errorf("empty table: %q", got.String())
	}
}

func TestRead(t *testing.T) {
	in := `{"benchmark":"B","figure":"f","value":1,"met":"no target"}

{"benchmark":"C","figure":"g","value":2,"target":"<= 3","met":"met"}
{"benchmark":"B","figure":"f","value":4,"met":"no target"}
{"benchmark":"B","figure":"f","value":4,"peer":"p","peerValue":2,"met":"no target"}
`
	rows, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Benchmark: "B", Figure: "f", Value: 4, Met: NoTarget},
		{Benchmark: "C", Figure: "g", Value: 2, Target: "<= 3", Met: Met},
		{Benchmark: "B", Figure: "f", Value: 4, Peer: "p", PeerValue: 2, Met: NoTarget},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		`{"benchmark":"B","figure":"f","value":1}`,                                   // no verdict
		`{"benchmark":"B","figure":"f","value":1,"met":"met"}`,                       // a verdict without a target
		`{"benchmark":"B","figure":"f","value":1,"target":"<= 1","met":"no target"}`, // a target without a verdict
		`{"benchmark":"B","figure":"f","ratio":2,"hasRatio":true,"met":"no target"}`, // a ratio without a peer
		`{"benchmark":"B","figure":"f","valu":1,"met":"no target"}`,                  // an unknown field
		`{"benchmark":"B","figure":"f",`,
	} {
		if _, err := Read(strings.NewReader(bad)); err == nil {
			t.Errorf("Read(%s): no error", bad)
		}
	}
}

func TestRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.jsonl")
	t.Setenv(EnvFile, "")
	Record(t, Row{Figure: "unset", Met: NoTarget})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("with %s unset, a file: %v", EnvFile, err)
	}

	t.Setenv(EnvFile, path)
	Record(t,
		Row{Figure: "a", Value: 3, Unit: "ms", Peer: "b", PeerValue: 2, Met: NoTarget}.WithRatio(),
		Row{Benchmark: "Other", Figure: "c", Value: 1, Peer: "d", Target: "<= 1", Met: Check(1 <= 1)}.WithRatio())
	rows, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Benchmark: t.Name(), Figure: "a", Value: 3, Unit: "ms", Peer: "b", PeerValue: 2, Ratio: 1.5, HasRatio: true, Met: NoTarget},
		{Benchmark: "Other", Figure: "c", Value: 1, Peer: "d", Target: "<= 1", Met: Met},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}

// recorder is a testing.TB whose Errorf only notes the failure.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Helper()               {}

// TestRecordInvalid: a row without a verdict fails the benchmark and
// writes nothing.
func TestRecordInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.jsonl")
	t.Setenv(EnvFile, path)
	rec := &recorder{TB: t}
	Record(rec, Row{Figure: "ok", Met: NoTarget}, Row{Figure: "no verdict"})
	if !rec.failed {
		t.Error("Record accepted a row without a verdict")
	}
	if rows, err := ReadFile(path); err != nil || len(rows) != 0 {
		t.Errorf("rows %+v, err %v; want none", rows, err)
	}
}

// TestAppendConcurrent: writers in parallel (as package test processes
// may be) never interleave their rows.
func TestAppendConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.jsonl")
	long := strings.Repeat("x", 2000)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				r := Row{Benchmark: long, Figure: string(rune('a'+i)) + strings.Repeat("y", j), Value: float64(j), Met: NoTarget}
				if err := Append(path, r, r); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	rows, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 8*50 {
		t.Errorf("%d rows, want %d", len(rows), 8*50)
	}
}

func TestAppendNotFinite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.jsonl")
	for _, r := range []Row{
		{Benchmark: "B", Figure: "f", Value: math.NaN(), Met: NoTarget},
		{Benchmark: "B", Figure: "f", Value: 1, Peer: "p", PeerValue: math.Inf(1), Met: NoTarget},
	} {
		if err := Append(path, r); err == nil {
			t.Errorf("Append(%+v): no error", r)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a file after refused rows: %v", err)
	}
}

func TestWithRatio(t *testing.T) {
	if r := (Row{Value: 1, PeerValue: 0}).WithRatio(); r.HasRatio {
		t.Errorf("ratio with a peer of zero: %+v", r)
	}
	if r := (Row{Value: 1, PeerValue: 4}).WithRatio(); !r.HasRatio || r.Ratio != 0.25 {
		t.Errorf("ratio of 1 and 4: %+v", r)
	}
}

func TestNumber(t *testing.T) {
	for v, want := range map[float64]string{
		15321.7: "15322", 131.5: "132", 92.25: "92.2", 3: "3", 2.6: "2.60", 0.4677: "0.468", 0.000123: "0.000123", -41.26: "-41.3",
	} {
		if got := number(v); got != want {
			t.Errorf("number(%v) = %q, want %q", v, got, want)
		}
	}
}

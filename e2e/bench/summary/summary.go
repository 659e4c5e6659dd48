// Package summary collects the headline figures of Membrane's benchmarks
// into one table: each benchmark appends its rows (a figure, the peer
// figure measured in the same run, their ratio, the target and whether it
// was met) as JSON lines to the file named by MEMBRANE_BENCH_SUMMARY, and
// `make bench` prints the table of that file after the last benchmark
// (go run ./e2e/benchsummary FILE).
//
// Benchmarks run in one process per package, one package after another:
// every row is one write to a file opened for appending, so rows from
// several processes never interleave.
package summary

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"testing"
)

// EnvFile names the environment variable that holds the summary file's
// path; when it is unset, Record writes nothing.
const EnvFile = "MEMBRANE_BENCH_SUMMARY"

// Verdict says whether a figure met its target.
type Verdict string

const (
	Met    Verdict = "met"
	Missed Verdict = "missed"
	// NoTarget: the figure has no target; it is there for comparison.
	NoTarget Verdict = "no target"
	// NotEvaluated: the figure has a target but the run could not tell,
	// e.g. the ratio's peer figure was zero.
	NotEvaluated Verdict = "not evaluated"
)

// Check is Met when ok, else Missed.
func Check(ok bool) Verdict {
	if ok {
		return Met
	}
	return Missed
}

// Row is one headline figure of a benchmark.
type Row struct {
	// Benchmark is the benchmark's name (b.Name(), sub-benchmark included).
	Benchmark string `json:"benchmark"`
	// Figure names what Value measures, e.g. "membrane added p50".
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	// Unit of Value and PeerValue, e.g. "µs", "conns/s".
	Unit string `json:"unit,omitempty"`
	// Peer names the figure measured in the same run that Value compares
	// with, e.g. "sidecar pair added p50"; "" when there is none.
	Peer      string  `json:"peer,omitempty"`
	PeerValue float64 `json:"peerValue,omitempty"`
	// Ratio is the comparison the benchmark reports, usually
	// Value/PeerValue; HasRatio false when there is none (no peer, or a
	// peer of zero).
	Ratio    float64 `json:"ratio,omitempty"`
	HasRatio bool    `json:"hasRatio,omitempty"`
	// Target as text, e.g. "<= 0.5x" or "p99 <= 100 ms"; "" when none.
	Target string `json:"target,omitempty"`
	// Met is the benchmark's own verdict against Target.
	Met Verdict `json:"met"`
	// Note: a short remark printed after the verdict, e.g. "added 634 µs".
	Note string `json:"note,omitempty"`
}

// WithRatio sets r's ratio to Value/PeerValue, or leaves it unset when
// PeerValue is zero.
func (r Row) WithRatio() Row {
	if r.PeerValue != 0 {
		r.Ratio, r.HasRatio = r.Value/r.PeerValue, true
	}
	return r
}

// Validate reports a row the table cannot show sensibly.
func (r Row) Validate() error {
	switch {
	case r.Benchmark == "" || r.Figure == "":
		return fmt.Errorf("row %+v: benchmark and figure are required", r)
	case r.Met == "":
		return fmt.Errorf("%s, %s: no verdict (met, missed, no target or not evaluated)", r.Benchmark, r.Figure)
	case r.Target == "" && r.Met != NoTarget:
		return fmt.Errorf("%s, %s: verdict %q without a target", r.Benchmark, r.Figure, r.Met)
	case r.Target != "" && r.Met == NoTarget:
		return fmt.Errorf("%s, %s: target %q with verdict %q", r.Benchmark, r.Figure, r.Target, r.Met)
	case r.HasRatio && r.Peer == "":
		return fmt.Errorf("%s, %s: a ratio without a peer", r.Benchmark, r.Figure)
	case !finite(r.Value) || !finite(r.PeerValue) || !finite(r.Ratio):
		return fmt.Errorf("%s, %s: value %v, peer value %v, ratio %v: not all finite", r.Benchmark, r.Figure, r.Value, r.PeerValue, r.Ratio)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Append appends rows, as JSON lines, to the file at path (created when
// missing), in one write.
func Append(path string, rows ...Row) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range rows {
		if err := r.Validate(); err != nil {
			return err
		}
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encode %s, %s: %w", r.Benchmark, r.Figure, err)
		}
	}
	if buf.Len() == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open the benchmark summary: %w", err)
	}
	_, err = f.Write(buf.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write the benchmark summary %s: %w", path, err)
	}
	return nil
}

// Record appends rows to the file named by MEMBRANE_BENCH_SUMMARY, naming
// tb's benchmark in those without one; nothing when the variable is
// unset. A row that cannot be written fails tb.
func Record(tb testing.TB, rows ...Row) {
	tb.Helper()
	path := os.Getenv(EnvFile)
	if path == "" {
		return
	}
	for i := range rows {
		if rows[i].Benchmark == "" {
			rows[i].Benchmark = tb.Name()
		}
	}
	if err := Append(path, rows...); err != nil {
		tb.Errorf("%s: %v", EnvFile, err)
	}
}

// Read returns the rows of a summary file's content, in order; a row whose
// benchmark, figure and peer come again is replaced by the later one, in
// the place of the first (a benchmark that ran more than once: its last
// run).
func Read(r io.Reader) ([]Row, error) {
	var rows []Row
	at := map[[3]string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var row Row
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&row); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if err := row.Validate(); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		key := [3]string{row.Benchmark, row.Figure, row.Peer}
		if i, ok := at[key]; ok {
			rows[i] = row
			continue
		}
		at[key] = len(rows)
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rows, nil
}

// ReadFile is Read of the file at path; a missing file has no rows.
func ReadFile(path string) ([]Row, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the benchmark summary: %w", err)
	}
	defer f.Close()
	rows, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rows, nil
}

// Command benchsummary prints the summary table of a benchmark run: the
// rows the benchmarks appended (package e2e/bench/summary) to the file
// that MEMBRANE_BENCH_SUMMARY named while they ran. `make bench` runs it
// after the last benchmark, whether or not every benchmark passed.
//
// With -gotest LOG (go test's output of the same run), a line below the
// table names the benchmarks that failed: their figures, if any, are the
// ones recorded before they failed.
//
// Usage:
//
//	go run ./e2e/benchsummary [-gotest LOG] FILE
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchsummary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: benchsummary [-gotest LOG] FILE")
		fmt.Fprintln(stderr, "Prints the benchmarks' headline figures that FILE (MEMBRANE_BENCH_SUMMARY of the run) holds, as one table.")
	}
	goTest := fs.String("gotest", "", "go test's output of the run: name the benchmarks that failed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want one file")
	}
	rows, err := summary.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := summary.Table(stdout, rows); err != nil {
		return err
	}
	if *goTest == "" {
		return nil
	}
	failed, err := failedBenchmarks(*goTest)
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		_, err = fmt.Fprintf(stdout, "Failed (see go test's output above): %s.\n", strings.Join(failed, ", "))
	}
	return err
}

// failedBenchmarks are the benchmarks go test's output at path reports as
// failed ("--- FAIL: BenchmarkX"), in order, each once.
func failedBenchmarks(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("go test's output: %w", err)
	}
	defer f.Close()
	var failed []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "--- FAIL: ")
		if !ok || !strings.HasPrefix(rest, "Benchmark") {
			continue
		}
		name := strings.Fields(rest)[0]
		if !seen[name] {
			seen[name] = true
			failed = append(failed, name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return failed, nil
}

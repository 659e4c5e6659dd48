// Command benchsummary prints the summary table of a benchmark run: the
// rows the benchmarks appended (package e2e/bench/summary) to the file
// that MEMBRANE_BENCH_SUMMARY named while they ran. `make bench` runs it
// after the last benchmark, whether or not every benchmark passed.
//
// Usage:
//
//	go run ./e2e/benchsummary FILE
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

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
		fmt.Fprintln(stderr, "usage: benchsummary FILE")
		fmt.Fprintln(stderr, "Prints the benchmarks' headline figures that FILE (MEMBRANE_BENCH_SUMMARY of the run) holds, as one table.")
	}
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
	return summary.Table(stdout, rows)
}

// Command testreport runs `go test -json` and prints what a plain go test
// prints — a result line per package, the output of the tests that failed
// (of every test with -v) — then one line that names every skipped test
// with its reason, or says that none was skipped. Its exit status is go
// test's, and not zero whenever a test or build failed.
//
// Usage (make test, make unit and make e2e run it):
//
//	go run ./e2e/testreport [-go go] -- [go test flags] [packages]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	var exit exitCode
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case err != nil:
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
}

// exitCode is the status go test exited with, or 1 when go test exited
// zero though a test failed.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	goBin := fs.String("go", "go", "the go command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	testArgs := fs.Args()
	verbose := slices.Contains(testArgs, "-v") || slices.Contains(testArgs, "-v=true")

	cmd := exec.Command(*goBin, append([]string{"test", "-json"}, testArgs...)...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("go test: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start go test: %w", err)
	}
	// An interrupt reaches go test too (same process group); a signal sent
	// to this process alone is passed on. Either way go test ends and its
	// last output is still printed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	defer func() { signal.Stop(sigs); close(done) }()

	r := newReporter(stdout, verbose, modulePath("go.mod"))
	readErr := r.read(out)
	waitErr := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit):
		return exitCode(exit.ExitCode())
	case waitErr != nil:
		return fmt.Errorf("go test: %w", waitErr)
	case readErr != nil:
		return readErr
	case r.failed:
		return exitCode(1)
	}
	return nil
}

// modulePath is the module path declared in the go.mod at path, or "" when
// there is none (test names keep their full package path then).
func modulePath(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for l := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

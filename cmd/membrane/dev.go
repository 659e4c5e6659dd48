package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"
)

// devBinary runs the local clusters. It is a binary of its own (built next
// to this one) so the CLI links no network namespace or container code.
const devBinary = "membrane-dev"

// newDevCommand hands `membrane dev …` to membrane-dev, with every
// argument as given (flags are membrane-dev's: -v, --name, …).
func newDevCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "dev",
		Short:              "Run a local Kubernetes cluster made of real parts, for development and tests (runs " + devBinary + ")",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := findDevBinary()
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), bin, args...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, g.stdout, g.stderr
			err = c.Run()
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				// membrane-dev reported its error already.
				return errDevFailed{code: ee.ExitCode()}
			}
			return err
		},
	}
}

// errDevFailed is membrane-dev's non-zero exit.
type errDevFailed struct{ code int }

func (e errDevFailed) Error() string {
	return fmt.Sprintf("%s exited with status %d", devBinary, e.code)
}

// findDevBinary looks next to this executable first (`make build` puts
// Membrane's binaries side by side), then on PATH.
func findDevBinary() (string, error) {
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		p := filepath.Join(filepath.Dir(exe), devBinary)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(devBinary)
	if err != nil {
		return "", fmt.Errorf("%s not found next to this binary or on PATH: run `make build`: %w", devBinary, err)
	}
	return p, nil
}

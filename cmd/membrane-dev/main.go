// Command membrane-dev runs local clusters made of real parts (`membrane
// dev …` hands its arguments to it). It is its own binary because it links
// network namespace and container code the CLI does not need.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

func main() {
	// A pod's container starts as this binary re-executed as its init.
	if len(os.Args) > 1 && os.Args[1] == runtime.InitArg {
		err := runtime.Init(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(runtime.ExitStatus(err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newDevCommand(&globals{stdout: stdout, stderr: stderr})
	root.SetArgs(args[1:])
	return root.ExecuteContext(ctx)
}

// globals are the options every command shares.
type globals struct {
	stdout, stderr io.Writer
	verbose        bool
}

func (g *globals) logger() *slog.Logger {
	level := slog.LevelInfo
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

// root flags and output of the command tree newDevCommand builds.
func setUpRoot(root *cobra.Command, g *globals) {
	root.SilenceUsage, root.SilenceErrors = true, true
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages")
}

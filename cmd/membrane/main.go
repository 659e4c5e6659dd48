// Command membrane is Membrane's command-line interface.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// version is the CLI's version; release builds set it with -ldflags -X.
const version = "v0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	var devFailed errDevFailed
	switch {
	case errors.As(err, &devFailed):
		os.Exit(devFailed.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args[1:])
	return root.ExecuteContext(ctx)
}

// globals are the options every command shares.
type globals struct {
	stdout, stderr io.Writer
	verbose        bool
	kubeconfig     string
	context        string
}

func (g *globals) logger() *slog.Logger {
	level := slog.LevelInfo
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "membrane",
		Short:         "Operate Membrane, the sidecar-free service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentPreRun = func(*cobra.Command, []string) {
		// client-go's own messages (e.g. an exec stream closed when its
		// check's time is up) only with --verbose.
		if g.verbose {
			klog.SetSlogLogger(g.logger().With("from", "client-go"))
		} else {
			klog.SetLogger(logr.Discard())
		}
	}
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages")
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
	root.PersistentFlags().StringVar(&g.context, "context", "", "kubeconfig context to use")
	root.AddCommand(newDevCommand(g), newServiceCommand(g), newBPFCommand(g), newEncryptionCommand(g), newIdentityCommand(g), newEndpointCommand(g), newPolicyCommand(g), newFQDNCommand(g), newObserveCommand(g), newStatusCommand(g), newConnectivityCommand(g), newClusterMeshCommand(g), newDebugCommand(g), newVersionCommand(g))
	return root
}

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the CLI version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(g.stdout, "membrane", version)
			return err
		},
	}
}

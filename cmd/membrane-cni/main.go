// Command membrane-cni is Membrane's CNI plugin: it wires each pod to its node
// with a routed veth pair and an IP from the node's PodCIDR. The runtime runs
// it in the node's network namespace with the CNI_* environment and the
// network config on stdin; the result or error goes to stdout as JSON, logs go
// to the config's logFile or to stderr. The work is done by mesh/cni/plugin.
package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/membrane-mesh/membrane/mesh/cni/plugin"
)

const about = "membrane-cni: Membrane's CNI plugin (routed veth, host-local IPAM from the node's PodCIDR)"

func main() {
	// Keep the main goroutine on the main thread, which is in the node's
	// network namespace; pod-namespace work runs on threads of its own.
	runtime.LockOSThread()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		os.Exit(1)
	}
}

// run dispatches the CNI command from the environment. Errors have already
// been printed to stdout as a CNI error when it returns one.
func run(ctx context.Context, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := plugin.New(plugin.Options{Logger: log})
	funcs := skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			res, err := p.Add(ctx, args)
			if err != nil {
				return err
			}
			return res.PrintTo(stdout)
		},
		Del:    func(args *skel.CmdArgs) error { return p.Del(ctx, args) },
		Check:  func(args *skel.CmdArgs) error { return p.Check(ctx, args) },
		Status: func(args *skel.CmdArgs) error { return p.Status(ctx, args) },
		GC:     func(args *skel.CmdArgs) error { return p.GC(ctx, args) },
	}
	cniErr := skel.PluginMainFuncsWithError(funcs, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), about)
	if cniErr == nil {
		return nil
	}
	if err := printError(stdout, cniErr); err != nil {
		log.Error("write CNI error to stdout", "error", err)
	}
	return cniErr
}

func printError(w io.Writer, e *types.Error) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(e)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-mesh/membrane/mesh/agentclient"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/flow/printer"
)

// defaultLast is how many flows observe shows when not following and no
// --last or --since is given (Hubble's default).
const defaultLast = 20

// observeRetry is how long observe --follow waits before reconnecting to an
// agent whose stream ended (the agent restarted).
const observeRetry = 2 * time.Second

// observeFilterHelp documents the filter flags, by name: the names are the
// observe API's parameters (flow.FilterKeys).
func observeFilterHelp() map[string]string {
	return map[string]string{
		flow.KeyNamespace:    "show flows from or to pods in this namespace",
		flow.KeyPod:          "show flows from or to pods: [namespace/]pod-name-prefix (no namespace: any)",
		flow.KeyFromPod:      "show flows from pods: [namespace/]pod-name-prefix (no namespace: any)",
		flow.KeyToPod:        "show flows to pods: [namespace/]pod-name-prefix (no namespace: any)",
		flow.KeyFromLabel:    "show flows from endpoints with labels: key=value (k8s: prefix optional), key!=value, key, !key; comma-separated terms must all hold",
		flow.KeyToLabel:      "show flows to endpoints with labels: key=value (k8s: prefix optional), key!=value, key, !key; comma-separated terms must all hold",
		flow.KeyFromIdentity: "show flows from this security identity: a number, or a reserved one (host, world, remote-node, ...)",
		flow.KeyToIdentity:   "show flows to this security identity: a number, or a reserved one (host, world, remote-node, ...)",
		flow.KeyVerdict:      "show flows with this verdict: FORWARDED, DROPPED or REDIRECTED (Hubble's ERROR, AUDIT, TRACED and TRANSLATED are accepted but never occur)",
		flow.KeyType:         "show flows of this type: drop, trace or l7",
		flow.KeyProtocol:     "show flows of this protocol: tcp, udp, sctp, icmp, http, dns",
		flow.KeyPort:         "show flows from or to this port",
		flow.KeyHTTPStatus:   "show HTTP flows with this status: a code (404) or a class (5+: any 5xx)",
		flow.KeyHTTPMethod:   "show HTTP flows with this request method (GET, POST, ...; any case)",
		flow.KeyHTTPPath:     "show HTTP flows whose path matches this RE2 regular expression (unanchored: ^/api/ for a prefix)",
	}
}

type observeOptions struct {
	filters   map[string]*[]string // by flow.FilterKeys name
	last      int
	since     string
	follow    bool
	node      string
	output    string
	printNode bool
}

func newObserveCommand(g *globals) *cobra.Command {
	o := &observeOptions{filters: map[string]*[]string{}}
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Show the flows the agents observed (as hubble observe does)",
		Long: `Show the flows the node agents observed: packets the policy datapath forwarded,
dropped (with the reason) or redirected to the L7 proxy, and the HTTP requests
the L7 proxy completed (one flow each: status and latency; DROPPED with
"L7 policy denied" when the L7 policy refused it), and the DNS questions the
DNS proxy handled (--protocol dns: name, type, response code, answered
addresses; DROPPED with "DNS query refused by policy" when the DNS rules
refused it).

Filters: several values of one flag match if any does; different flags must
all match. Without --follow, the last 20 matching flows are shown (--last,
--since), merged across nodes by time; with --follow, new flows as they come,
interleaved from all nodes.`,
		Example: `  membrane observe --verdict DROPPED
  membrane observe -n default --protocol dns
  membrane observe -n default --to-pod default/backend --protocol tcp --port 8080 -f
  membrane observe --from-label app=frontend --since 5m -o json
  membrane observe --from-identity world --type drop --node node-1
  membrane observe --protocol http --http-status 5+ --http-status 403 -f
  membrane observe --http-method DELETE --http-path '^/api/v1/payments/' --verdict DROPPED`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, format, err := o.request(cmd, time.Now())
			if err != nil {
				return err
			}
			c, nodes, err := g.clientForNodes(cmd.Context(), o.node)
			if err != nil {
				return err
			}
			p := printer.New(g.stdout, printer.Options{Format: format, NodeName: o.printNode})
			if o.follow {
				return followFlows(cmd.Context(), c, nodes, req, p, g.stderr)
			}
			return lastFlows(cmd.Context(), c, nodes, req, p)
		},
	}
	f := cmd.Flags()
	help := observeFilterHelp()
	for _, key := range flow.FilterKeys {
		o.filters[key] = new([]string)
		if key == flow.KeyNamespace {
			f.StringArrayVarP(o.filters[key], key, "n", nil, help[key])
			continue
		}
		f.StringArrayVar(o.filters[key], key, nil, help[key])
	}
	f.IntVar(&o.last, "last", 0, "show the last N matching flows of all nodes (default 20 without --follow or --since; with --follow, before the new ones)")
	f.StringVar(&o.since, "since", "", "show flows since this time: a duration (5m) or RFC 3339 (2025-11-21T16:40:00Z)")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep showing new flows as they come")
	f.StringVar(&o.node, "node", "", "only this node's flows (default: all nodes)")
	f.StringVarP(&o.output, "output", "o", string(printer.Compact), "output format: compact, json or table")
	f.BoolVar(&o.printNode, "print-node-name", false, "show the node that observed each flow")
	return cmd
}

// request checks the flags and builds the observe API request; errors name
// the flag.
func (o *observeOptions) request(cmd *cobra.Command, now time.Time) (flow.Request, printer.Format, error) {
	var req flow.Request
	for _, key := range flow.FilterKeys {
		if err := req.Filter.Set(key, *o.filters[key]...); err != nil {
			return req, "", fmt.Errorf("--%s %w", key, err)
		}
	}
	if o.since != "" {
		t, err := flow.ParseSince(o.since, now)
		if err != nil {
			return req, "", fmt.Errorf("--since %w", err)
		}
		req.Filter.Since = t
	}
	switch lastSet := cmd.Flags().Changed("last"); {
	case lastSet && o.last < 1:
		return req, "", fmt.Errorf("--last %d: want at least 1", o.last)
	case lastSet:
		req.Last = o.last
	case !o.follow && o.since == "":
		req.Last = defaultLast
	}
	req.Follow = o.follow
	format, err := printer.ParseFormat(o.output)
	if err != nil {
		return req, "", fmt.Errorf("--output %w", err)
	}
	return req, format, nil
}

// lastFlows asks every node for its matching flows and prints them merged
// by time (the last req.Last of them). Nodes whose agent does not answer
// are reported in the error; the others' flows are printed.
func lastFlows(ctx context.Context, c *clusterClient, nodes []string, req flow.Request, p *printer.Printer) error {
	lists := make([][]flow.Flow, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() {
			_, errs[i] = streamFlows(ctx, c, node, req, func(f flow.Flow) error {
				lists[i] = append(lists[i], f)
				return nil
			}, nil)
		})
	}
	wg.Wait()
	for _, f := range flow.MergeLast(lists, req.Last) {
		if err := p.Write(f); err != nil {
			return err
		}
	}
	if err := p.Flush(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// followFlows streams every node's flows, printing them as they come, until
// ctx ends or printing fails. A stream that ends after it was up (the agent
// restarted) is reopened where it stopped; a node whose agent does not
// answer at first is reported on stderr at once, and named in the error.
func followFlows(ctx context.Context, c *clusterClient, nodes []string, req flow.Request, p *printer.Printer, stderr io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex // p and stderr
	write := func(f flow.Flow) error {
		mu.Lock()
		defer mu.Unlock()
		if err := p.Write(f); err != nil {
			cancel(err)
			return err
		}
		if err := p.Flush(); err != nil {
			cancel(err)
			return err
		}
		return nil
	}
	warn := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, format+"\n", args...)
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() { errs[i] = followNode(ctx, c, node, req, write, warn) })
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err // printing failed
	}
	var missing []string
	for i, err := range errs {
		if err != nil {
			missing = append(missing, nodes[i])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no flows from %d of %d nodes (see above): %s", len(missing), len(nodes), strings.Join(missing, ", "))
	}
	return nil
}

// followNode follows one node's flows until ctx ends, reconnecting after
// the stream was up; it returns an error only when the agent never answered.
func followNode(ctx context.Context, c *clusterClient, node string, req flow.Request, write func(flow.Flow) error, warn func(string, ...any)) error {
	var seen time.Time
	lost := func(l flow.LostEvents) error {
		warn("node %s: %d flows lost: this reader fell behind", node, l.Count)
		return nil
	}
	for {
		up, err := streamFlows(ctx, c, node, req, func(f flow.Flow) error {
			if f.Time.After(seen) {
				seen = f.Time
			}
			return write(f)
		}, lost)
		switch {
		case ctx.Err() != nil:
			return nil
		case !up:
			warn("%v", err)
			return err
		case err != nil:
			warn("%v (reconnecting)", err)
		default:
			warn("node %s: flow stream ended, reconnecting", node)
		}
		// Resume after the last flow shown, without a new backlog.
		req.Last = 0
		if !seen.IsZero() {
			req.Filter.Since = seen.Add(time.Nanosecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(observeRetry):
		}
	}
}

// streamFlows runs one observe request against a node's agent (through the
// API server's node proxy), calling fn for every flow; up says whether the
// agent answered.
func streamFlows(ctx context.Context, c *clusterClient, node string, req flow.Request, fn func(flow.Flow) error, lost func(flow.LostEvents) error) (up bool, err error) {
	body, err := c.agents.Stream(ctx, node, flow.Path, req.Values())
	if se := (*agentclient.StatusError)(nil); errors.As(err, &se) && se.Status == http.StatusBadRequest {
		return false, fmt.Errorf("agent refused the request (is it older than this CLI?): %w", err)
	}
	if err != nil {
		return false, err
	}
	defer body.Close()
	if err := flow.StreamWithLost(ctx, body, fn, lost); err != nil {
		return true, fmt.Errorf("node %s: %w", node, err)
	}
	return true, nil
}

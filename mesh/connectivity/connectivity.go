// Package connectivity checks a cluster's pod networking end to end, as
// `cilium connectivity test` does: it runs echo servers and curl clients in
// a namespace of its own, and from inside the clients checks pod to pod on
// one node and across nodes, pod to a Service's ClusterIP (both backends
// answering) and by its DNS name, the same from a client in a node's
// network namespace, pod to an address outside the cluster when given
// one, a NetworkPolicy (the allowed client gets
// through, the other is refused) and, where the agents run the L7 proxy, an
// HTTP rule of a MembraneNetworkPolicy (the allowed path 200, another 403),
// and that the agents' flows show the drop and the HTTP response. Every
// check waits for its condition up to a bound, so a policy only just
// written has time to reach the datapath; the namespace goes at the end.
package connectivity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/mesh/flow"
)

// ManagedBy is the value of the app.kubernetes.io/managed-by label of the
// namespace (and of every object) the test makes: a namespace without it
// is never touched.
const ManagedBy = "membrane-connectivity-test"

// Options shape one run.
type Options struct {
	Namespace   string
	ClientImage string
	EchoImage   string
	// Timeout bounds the wait for the pods and each check.
	Timeout time.Duration
	// Keep leaves the namespace and its pods for a look afterwards.
	Keep bool
	// L7 runs the L7 checks (the agents run the node proxy).
	L7 bool
	// Flows runs the flow checks (the Cluster reads the agents' flows).
	Flows bool
	// Only runs the checks whose names it matches (nil: all).
	Only *regexp.Regexp
	// HostClient runs a client in the first node's network namespace
	// (hostNetwork) for the node-to-pod checks.
	HostClient bool
	// ExternalURL, when set, is what the pod-to-world check asks for.
	ExternalURL string
	// Encryption runs the encryption check (the nodes encrypt their
	// traffic with WireGuard; the Cluster reads their tunnels' counters).
	Encryption bool
}

// Status is a check's outcome.
type Status string

const (
	Passed  Status = "passed"
	Failed  Status = "failed"
	Skipped Status = "skipped"
)

// Result is one check's outcome: what it did and saw.
type Result struct {
	Name   string        `json:"name"`
	Status Status        `json:"status"`
	Detail string        `json:"detail"`
	Took   time.Duration `json:"tookNanoseconds"`
}

// Cluster is what the test needs of the cluster: making and removing its
// objects, and running a command in a pod (see Kube).
type Cluster interface {
	// Claim makes the test's namespace: it refuses a namespace of that
	// name the test did not make, and replaces one it made before.
	Claim(ctx context.Context) error
	// Setup makes the workload (see Workload) in the namespace and waits
	// until every pod is ready; it returns the pods' and Services'
	// addresses.
	Setup(ctx context.Context, w Workload) (Addresses, error)
	// Apply creates or replaces a policy object of the namespace (a
	// NetworkPolicy or a MembraneNetworkPolicy), Delete removes it.
	Apply(ctx context.Context, p Policy) error
	Delete(ctx context.Context, p Policy) error
	// Exec runs cmd in the pod's only container and returns its standard
	// output; a command that exits non-zero returns an ExitError.
	Exec(ctx context.Context, pod string, cmd []string) (string, error)
	// Teardown removes the namespace and waits until it is gone.
	Teardown(ctx context.Context) error
	// Flows are the flows node's agent observed that req matches
	// (ErrNoFlows: the flows cannot be read).
	Flows(ctx context.Context, node string, req flow.Request) ([]flow.Flow, error)
	// Tunnel is what node's WireGuard device has carried to and from its
	// peer node so far (ErrNoTunnel: it cannot be read).
	Tunnel(ctx context.Context, node, peer string) (Transfer, error)
}

// Transfer counts the bytes a node's WireGuard device sent to one peer
// and received from it (encrypted, as the underlay carries them).
type Transfer struct {
	Sent, Received int64
}

// ErrNoTunnel is the error of a Cluster that cannot read the tunnels.
var ErrNoTunnel = errors.New("no access to the agents' WireGuard devices")

// ErrNoFlows is the error of a Cluster that cannot read flows.
var ErrNoFlows = errors.New("no access to the agents' flows")

// ExitError is a command that ran and exited non-zero.
type ExitError struct {
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("exit code %d: %s", e.Code, strings.TrimSpace(e.Stderr))
}

// Addresses are the workload's pod IPs by pod name and the ClusterIP of the
// echo Service.
type Addresses struct {
	Pods      map[string]string
	ClusterIP string
	// Nodes is the node of each pod.
	Nodes map[string]string
}

// Run sets the workload up on nodes (the first two are used; one node
// skips the cross-node check), runs every check and tears down (unless
// Keep). It writes each result to out as it comes and returns them all;
// the error is a failure to set up, not a failed check (a failure to tear
// down is logged).
func Run(ctx context.Context, log *slog.Logger, c Cluster, o Options, nodes []string, out io.Writer) ([]Result, error) {
	if len(nodes) == 0 {
		return nil, errors.New("no ready node to run the test pods on")
	}
	w := newWorkload(o, nodes)
	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := c.Claim(sctx); err != nil {
		return nil, err
	}
	defer func() {
		if o.Keep {
			log.Info("the test's namespace is kept", "namespace", o.Namespace)
			return
		}
		// The caller's context may be cancelled (Ctrl-C): tear down anyway.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.Timeout+30*time.Second)
		defer cancel()
		if err := c.Teardown(tctx); err != nil {
			log.Error("remove the test's namespace", "namespace", o.Namespace, "error", err)
		}
	}()
	addrs, err := c.Setup(sctx, w)
	if err != nil {
		return nil, fmt.Errorf("set up the test pods in namespace %s: %w", o.Namespace, err)
	}
	var results []Result
	var inForce *Policy // the policy the checks so far applied
	defer func() {
		if inForce != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := c.Delete(dctx, *inForce); err != nil {
				log.Error("delete the test's policy", "kind", inForce.Kind, "name", inForce.Name, "error", err)
			}
		}
	}()
	for _, ch := range checks(o, w, addrs) {
		start := time.Now()
		r := Result{Name: ch.name}
		if ch.skip != "" {
			r.Status, r.Detail = Skipped, ch.skip
		} else {
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			if err = enforce(cctx, c, &inForce, ch.policy); err == nil {
				r.Detail, err = ch.run(cctx, c)
			}
			cancel()
			r.Status = Passed
			if err != nil {
				r.Status, r.Detail = Failed, err.Error()
			}
		}
		r.Took = time.Since(start)
		results = append(results, r)
		fmt.Fprintln(out, FormatResult(r))
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
	}
	return results, nil
}

// enforce makes want the policy in force (nil: none) if it is not already.
func enforce(ctx context.Context, c Cluster, inForce **Policy, want *Policy) error {
	if *inForce == want {
		return nil
	}
	if p := *inForce; p != nil {
		if err := c.Delete(ctx, *p); err != nil {
			return fmt.Errorf("delete %s %s: %w", p.Kind, p.Name, err)
		}
		*inForce = nil
	}
	if want != nil {
		if err := c.Apply(ctx, *want); err != nil {
			return fmt.Errorf("apply %s %s: %w", want.Kind, want.Name, err)
		}
		*inForce = want
	}
	return nil
}

// FormatResult is one result as a line.
func FormatResult(r Result) string {
	mark := map[Status]string{Passed: "✓", Failed: "✗", Skipped: "-"}[r.Status]
	return fmt.Sprintf("%s %-28s %s (%s)", mark, r.Name, r.Detail, r.Took.Round(time.Millisecond))
}

// Summary counts the results: "N passed, M failed, K skipped", and an
// error naming the failed checks when any failed.
func Summary(results []Result) (string, error) {
	n := map[Status]int{}
	var failed []string
	for _, r := range results {
		n[r.Status]++
		if r.Status == Failed {
			failed = append(failed, r.Name)
		}
	}
	line := fmt.Sprintf("%d passed, %d failed, %d skipped", n[Passed], n[Failed], n[Skipped])
	if len(failed) > 0 {
		return line, fmt.Errorf("%d of %d checks failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return line, nil
}

// check is one check: skip says why it does not run; policy is the
// policy in force while it runs (nil: none). The checks of one policy
// follow each other, the first waiting until it is enforced.
type check struct {
	name   string
	skip   string
	policy *Policy
	run    func(ctx context.Context, c Cluster) (string, error)
}

// checks are the checks of the workload, in order.
func checks(o Options, w Workload, a Addresses) []check {
	echoA, echoB := "http://"+a.Pods[EchoA]+":3000", ""
	if w.TwoNodes {
		echoB = "http://" + a.Pods[EchoB] + ":3000"
	}
	svc := "http://" + a.ClusterIP + ":8080"
	dns := "http://" + EchoService + "." + o.Namespace + ".svc.cluster.local:8080"
	out := []check{
		{name: "pod-to-pod/same-node", run: expect(Client, echoA+"/", 200)},
		{name: "pod-to-pod/cross-node", run: expect(Client, echoB+"/", 200)},
		{name: "encryption/pod-to-pod-cross-node", run: throughTunnel(a.Nodes[Client], a.Nodes[EchoB], Client, echoB+"/")},
		{name: "pod-to-service/cluster-ip", run: spread(Client, svc+"/", w.echoPods())},
		{name: "pod-to-service/dns", run: expect(Client, dns+"/", 200)},
		{name: "node-to-pod/same-node", run: expect(HostClient, echoA+"/", 200)},
		{name: "node-to-pod/cross-node", run: expect(HostClient, echoB+"/", 200)},
		{name: "node-to-service/cluster-ip", run: spread(HostClient, svc+"/", w.echoPods())},
		{name: "pod-to-world/http", run: answered(Client, o.ExternalURL)},
		// Each policy's first check waits until the policy is enforced.
		{name: "network-policy/denied", policy: &w.NetworkPolicy, run: refused(OtherClient, echoA+"/")},
		{name: "network-policy/allowed", policy: &w.NetworkPolicy, run: expect(Client, echoA+"/", 200)},
		{name: "flows/policy-drop", policy: &w.NetworkPolicy, run: seenFlow(a.Nodes[EchoA], map[string][]string{
			flow.KeyFromPod: {o.Namespace + "/" + OtherClient}, flow.KeyToPod: {o.Namespace + "/" + EchoA}, flow.KeyVerdict: {"DROPPED"},
		}, "a drop of client-other → echo-a for Policy denied", func(f flow.Flow) bool {
			return f.DropReason != nil && f.DropReason.Description == "Policy denied"
		})},
		{name: "l7-policy/denied-path", policy: &w.L7Policy, run: expect(Client, echoA+"/private", 403)},
		{name: "l7-policy/allowed-path", policy: &w.L7Policy, run: expect(Client, echoA+"/public/hello", 200)},
		{name: "flows/l7-http", policy: &w.L7Policy, run: seenFlow(a.Nodes[EchoA], map[string][]string{
			flow.KeyType: {"l7"}, flow.KeyFromPod: {o.Namespace + "/" + Client}, flow.KeyToPod: {o.Namespace + "/" + EchoA}, flow.KeyHTTPPath: {"^/private$"},
		}, "the HTTP response GET /private 403", func(f flow.Flow) bool {
			return f.L7 != nil && f.L7.HTTP != nil && f.L7.HTTP.Method == "GET" && f.L7.HTTP.Code == 403
		})},
	}
	for i := range out {
		switch {
		case !w.TwoNodes && strings.HasSuffix(out[i].name, "cross-node"):
			out[i].skip = "one node only"
		case !o.Encryption && strings.HasPrefix(out[i].name, "encryption/"):
			out[i].skip = "the nodes do not encrypt their traffic (chart value encryption.enabled=false)"
		case !o.HostClient && strings.HasPrefix(out[i].name, "node-to-"):
			out[i].skip = "no client in a node's network namespace (--host-client=false)"
		case o.ExternalURL == "" && strings.HasPrefix(out[i].name, "pod-to-world/"):
			out[i].skip = "no address outside the cluster to ask (--external-url)"
		case !o.L7 && (strings.HasPrefix(out[i].name, "l7-policy/") || out[i].name == "flows/l7-http"):
			out[i].skip = "the agents run no L7 proxy (chart value l7Proxy=false)"
		case !o.Flows && strings.HasPrefix(out[i].name, "flows/"):
			out[i].skip = ErrNoFlows.Error()
		case o.Only != nil && !o.Only.MatchString(out[i].name):
			out[i].skip = "not selected (--test " + o.Only.String() + ")"
		}
	}
	return out
}

// poll is how often a check tries again while its condition is not met.
const poll = 500 * time.Millisecond

// until runs try until it succeeds or ctx ends; the error is try's last
// that ctx's end did not cut short.
func until(ctx context.Context, try func(context.Context) (string, error)) (string, error) {
	var last error
	for {
		detail, err := try(ctx)
		if err == nil {
			return detail, nil
		}
		if last == nil || ctx.Err() == nil {
			last = err // not the one the bound cut short
		}
		select {
		case <-ctx.Done():
			return "", last
		case <-time.After(poll):
		}
	}
}

// curlCode runs curl in pod for url (2 s bound) and returns the HTTP status
// and the body.
func curlCode(ctx context.Context, c Cluster, pod, url string) (int, string, error) {
	out, err := c.Exec(ctx, pod, []string{"curl", "-s", "-m", "2", "-w", "\n%{http_code}", url})
	if err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			return 0, "", &curlError{url: url, exit: ee.Code}
		}
		return 0, "", fmt.Errorf("exec curl in %s: %w", pod, err)
	}
	i := strings.LastIndex(out, "\n")
	var code int
	if _, err := fmt.Sscan(out[i+1:], &code); err != nil {
		return 0, "", fmt.Errorf("curl %s: no status in %q", url, out)
	}
	return code, out[:max(i, 0)], nil
}

// curlError is a curl that ran and got no HTTP answer.
type curlError struct {
	url  string
	exit int
}

func (e *curlError) Error() string { return fmt.Sprintf("curl %s: %s", e.url, curlExit(e.exit)) }

// curlExit names curl's exit codes a connection check meets.
func curlExit(code int) string {
	switch code {
	case 6:
		return "could not resolve the host (exit 6)"
	case 7:
		return "connection refused or unreachable (exit 7)"
	case 28:
		return "timed out (exit 28)"
	case 52:
		return "empty reply (exit 52)"
	case 56:
		return "connection reset (exit 56)"
	}
	return fmt.Sprintf("exit %d", code)
}

// expect: pod gets status want from url.
func expect(pod, url string, want int) func(context.Context, Cluster) (string, error) {
	return func(ctx context.Context, c Cluster) (string, error) {
		return until(ctx, func(ctx context.Context) (string, error) {
			code, _, err := curlCode(ctx, c, pod, url)
			switch {
			case err != nil:
				return "", err
			case code != want:
				return "", fmt.Errorf("%s → %s: %d, want %d", pod, url, code, want)
			}
			return fmt.Sprintf("%s → %s: %d", pod, url, code), nil
		})
	}
}

// answered: pod's request to url gets an HTTP answer, of any status (a
// site outside the cluster may redirect or refuse the path).
func answered(pod, url string) func(context.Context, Cluster) (string, error) {
	return func(ctx context.Context, c Cluster) (string, error) {
		return until(ctx, func(ctx context.Context) (string, error) {
			code, _, err := curlCode(ctx, c, pod, url)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s → %s: %d", pod, url, code), nil
		})
	}
}

// Requests of the encryption check: each carries a header of
// tunnelPadding bytes, which echo-basic's answer repeats.
const (
	tunnelRequests = 5
	tunnelPadding  = 16 << 10
)

// throughTunnel: pod (on node) makes tunnelRequests requests to url (of a
// pod on peer), and node's WireGuard device counts at least their bytes
// sent to peer and received from it: they went through the tunnel.
func throughTunnel(node, peer, pod, url string) func(context.Context, Cluster) (string, error) {
	return func(ctx context.Context, c Cluster) (string, error) {
		return until(ctx, func(ctx context.Context) (string, error) { return tunnelCarries(ctx, c, node, peer, pod, url) })
	}
}

// tunnelCarries is one try of throughTunnel.
func tunnelCarries(ctx context.Context, c Cluster, node, peer, pod, url string) (string, error) {
	before, err := c.Tunnel(ctx, node, peer)
	if err != nil {
		return "", err
	}
	pad := strings.Repeat("a", tunnelPadding)
	for range tunnelRequests {
		out, err := c.Exec(ctx, pod, []string{"curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Padding: " + pad, url})
		if err != nil {
			return "", fmt.Errorf("curl %s from %s: %w", url, pod, err)
		}
		if strings.TrimSpace(out) != "200" {
			return "", fmt.Errorf("%s → %s: %s, want 200", pod, url, out)
		}
	}
	after, err := c.Tunnel(ctx, node, peer)
	if err != nil {
		return "", err
	}
	sent, received := after.Sent-before.Sent, after.Received-before.Received
	const least = tunnelRequests * tunnelPadding
	if sent < least || received < least {
		return "", fmt.Errorf("%d requests of %d bytes each way: %s's tunnel to %s sent %d and received %d bytes meanwhile, want at least %d each: the traffic went around it",
			tunnelRequests, tunnelPadding, node, peer, sent, received, least)
	}
	return fmt.Sprintf("%d requests of %d bytes each way %s → %s: %s's WireGuard tunnel to %s sent %d and received %d bytes meanwhile",
		tunnelRequests, tunnelPadding, pod, url, node, peer, sent, received), nil
}

// refused: pod's request to url gets no answer (the policy drops it).
func refused(pod, url string) func(context.Context, Cluster) (string, error) {
	return func(ctx context.Context, c Cluster) (string, error) {
		return until(ctx, func(ctx context.Context) (string, error) {
			code, _, err := curlCode(ctx, c, pod, url)
			if err == nil {
				return "", fmt.Errorf("%s → %s: %d, want no answer", pod, url, code)
			}
			var ce *curlError
			if !errors.As(err, &ce) {
				return "", err // the exec itself failed
			}
			return fmt.Sprintf("%s → %s: refused (%v)", pod, url, err), nil
		})
	}
}

// seenFlow: node's agent observed a flow that filter (observe's filter
// keys) matches and that has what want checks (described by what).
func seenFlow(node string, filter map[string][]string, what string, want func(flow.Flow) bool) func(context.Context, Cluster) (string, error) {
	return func(ctx context.Context, c Cluster) (string, error) {
		var req flow.Request
		for k, vs := range filter {
			if err := req.Filter.Set(k, vs...); err != nil {
				return "", fmt.Errorf("filter %s: %w", k, err)
			}
		}
		return until(ctx, func(ctx context.Context) (string, error) {
			flows, err := c.Flows(ctx, node, req)
			if err != nil {
				return "", fmt.Errorf("flows of %s: %w", node, err)
			}
			for _, f := range flows {
				if want(f) {
					return fmt.Sprintf("%s: %s", node, what), nil
				}
			}
			return "", fmt.Errorf("%s: %d matching flows, none is %s", node, len(flows), what)
		})
	}
}

// spread: every one of pods answers pod's requests to the Service url
// (echo-basic names the pod that answered); at most 40 requests a round.
func spread(pod, url string, pods []string) func(context.Context, Cluster) (string, error) {
	return func(ctx context.Context, c Cluster) (string, error) {
		return until(ctx, func(ctx context.Context) (string, error) {
			seen := map[string]int{}
			for range 40 {
				code, body, err := curlCode(ctx, c, pod, url)
				if err != nil {
					return "", err
				}
				if code != 200 {
					return "", fmt.Errorf("%s → %s: %d, want 200", pod, url, code)
				}
				var answer struct {
					Pod string `json:"pod"`
				}
				if err := json.Unmarshal([]byte(body), &answer); err != nil {
					return "", fmt.Errorf("%s → %s: the answer %q names no pod: %w", pod, url, body, err)
				}
				if slices.Contains(pods, answer.Pod) {
					seen[answer.Pod]++
				}
				if len(seen) == len(pods) {
					break
				}
			}
			if len(seen) != len(pods) {
				return "", fmt.Errorf("%s → %s: answered by %v, want each of %v", pod, url, seen, pods)
			}
			var by []string
			for _, p := range pods {
				by = append(by, fmt.Sprintf("%s %d", p, seen[p]))
			}
			return fmt.Sprintf("%s → %s: 200 from %s", pod, url, strings.Join(by, ", ")), nil
		})
	}
}

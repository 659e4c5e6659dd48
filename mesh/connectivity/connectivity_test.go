package connectivity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/flow"
)

// fakeCluster answers curl as a cluster whose datapath enforces the
// policies applied (NetworkPolicy: only Client reaches the echo pods; L7:
// /private is 403), and records what the test did.
type fakeCluster struct {
	claimErr error
	// down: requests to these URLs time out (exit 28).
	down     []string
	inForce  map[string]bool
	calls    []string
	tornDown bool
	served   int
	// hostNetwork are the pods set up in their node's network namespace.
	hostNetwork []string
	// tunnel counts what the requests with a header sent through n1's
	// tunnel to n2, unless bypass.
	tunnel Transfer
	bypass bool
}

func (f *fakeCluster) Claim(context.Context) error {
	f.calls = append(f.calls, "claim")
	return f.claimErr
}

func (f *fakeCluster) Setup(_ context.Context, w Workload) (Addresses, error) {
	f.calls = append(f.calls, "setup")
	a := Addresses{Pods: map[string]string{}, Nodes: map[string]string{}, ClusterIP: "10.96.0.10"}
	for i, p := range w.Pods {
		a.Pods[p.Name] = "10.244.0." + string(rune('1'+i))
		a.Nodes[p.Name] = p.Spec.NodeName
		if p.Spec.HostNetwork {
			f.hostNetwork = append(f.hostNetwork, p.Name)
		}
	}
	return a, nil
}

func (f *fakeCluster) Apply(_ context.Context, p Policy) error {
	f.calls = append(f.calls, "apply "+p.Name)
	f.inForce[p.Kind] = true
	return nil
}

func (f *fakeCluster) Delete(_ context.Context, p Policy) error {
	f.calls = append(f.calls, "delete "+p.Name)
	delete(f.inForce, p.Kind)
	return nil
}

func (f *fakeCluster) Exec(_ context.Context, pod string, cmd []string) (string, error) {
	url := cmd[len(cmd)-1]
	if slices.Contains(cmd, "-H") {
		// The encryption check's request: the header goes there and
		// back, with some more.
		if !f.bypass {
			f.tunnel.Sent += tunnelPadding + 100
			f.tunnel.Received += tunnelPadding + 300
		}
		return "200", nil
	}
	switch {
	case slices.ContainsFunc(f.down, func(d string) bool { return strings.HasPrefix(url, d) }):
		return "", &ExitError{Code: 28}
	case f.inForce["NetworkPolicy"] && pod != Client:
		return "", &ExitError{Code: 28}
	case f.inForce["MembraneNetworkPolicy"] && strings.HasSuffix(url, "/private"):
		return "RBAC: access denied\n403", nil
	case strings.Contains(url, ":8080"):
		// The Service's endpoints answer in turn.
		f.served++
		return fmt.Sprintf(`{"path": "/", "pod": "echo-%c"}`+"\n200", 'a'+f.served%2), nil
	}
	return "{}\n200", nil
}

func (f *fakeCluster) Teardown(context.Context) error { f.tornDown = true; return nil }

func (f *fakeCluster) Tunnel(_ context.Context, node, peer string) (Transfer, error) {
	if node != "n1" || peer != "n2" {
		return Transfer{}, fmt.Errorf("no tunnel of %s to %s", node, peer)
	}
	return f.tunnel, nil
}

// Flows: the drops and the L7 responses the policies in force made.
func (f *fakeCluster) Flows(_ context.Context, node string, req flow.Request) ([]flow.Flow, error) {
	if node != "n1" {
		return nil, nil // echo-a runs on n1
	}
	var out []flow.Flow
	if f.inForce["NetworkPolicy"] && slices.Contains(req.Filter.Verdict, flow.Dropped) {
		out = append(out, flow.Flow{Verdict: flow.Dropped, DropReason: &flow.DropReason{Description: "Policy denied"}})
	}
	if f.inForce["MembraneNetworkPolicy"] && slices.Contains(req.Filter.Type, flow.TypeL7) {
		out = append(out, flow.Flow{Type: flow.TypeL7, L7: &flow.L7{HTTP: &flow.HTTP{Method: "GET", Code: 403}}})
	}
	return out, nil
}

func run(t *testing.T, f *fakeCluster, o Options, nodes ...string) ([]Result, error) {
	t.Helper()
	f.inForce = map[string]bool{}
	o.Namespace, o.Timeout = "membrane-test", 2*time.Second
	return Run(t.Context(), slog.New(slog.NewTextHandler(io.Discard, nil)), f, o, nodes, io.Discard)
}

func statuses(results []Result) map[string]Status {
	out := map[string]Status{}
	for _, r := range results {
		out[r.Name] = r.Status
	}
	return out
}

func TestRunPasses(t *testing.T) {
	f := &fakeCluster{}
	results, err := run(t, f, Options{L7: true, Flows: true, HostClient: true, ExternalURL: "http://api.example.com/", Encryption: true}, "n1", "n2")
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range statuses(results) {
		if st != Passed {
			t.Errorf("%s: %s", name, st)
		}
	}
	line, err := Summary(results)
	if line != "15 passed, 0 failed, 0 skipped" || err != nil {
		t.Errorf("summary %q, %v", line, err)
	}
	if !slices.Equal(f.hostNetwork, []string{HostClient}) {
		t.Errorf("pods in their node's network namespace: %v, want %s only", f.hostNetwork, HostClient)
	}
	// Each policy is applied once for its checks, and removed before the
	// next one and at the end.
	want := []string{"claim", "setup", "apply echo-from-client", "delete echo-from-client", "apply echo-l7", "delete echo-l7"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls %v, want %v", f.calls, want)
	}
	if !f.tornDown {
		t.Error("the namespace was not removed")
	}
}

func TestRunFailsAndSkips(t *testing.T) {
	f := &fakeCluster{down: []string{"http://10.96.0.10:8080"}}
	results, err := run(t, f, Options{L7: false}, "n1")
	if err != nil {
		t.Fatal(err)
	}
	got := statuses(results)
	want := map[string]Status{
		"pod-to-pod/same-node": Passed, "pod-to-pod/cross-node": Skipped,
		"pod-to-service/cluster-ip": Failed, "pod-to-service/dns": Passed,
		"network-policy/denied": Passed, "network-policy/allowed": Passed,
		"l7-policy/denied-path": Skipped, "l7-policy/allowed-path": Skipped,
		"flows/policy-drop": Skipped, "flows/l7-http": Skipped,
		"node-to-pod/same-node": Skipped, "node-to-pod/cross-node": Skipped, "node-to-service/cluster-ip": Skipped,
		"pod-to-world/http": Skipped, "encryption/pod-to-pod-cross-node": Skipped,
	}
	for name, st := range want {
		if got[name] != st {
			t.Errorf("%s: %s, want %s", name, got[name], st)
		}
	}
	for _, r := range results {
		if r.Name == "pod-to-service/cluster-ip" && r.Detail != "curl http://10.96.0.10:8080/: timed out (exit 28)" {
			t.Errorf("detail %q: want what curl saw", r.Detail)
		}
	}
	line, err := Summary(results)
	if line != "4 passed, 1 failed, 10 skipped" || err == nil || !strings.Contains(err.Error(), "1 of 15 checks failed: pod-to-service/cluster-ip") {
		t.Errorf("summary %q, %v", line, err)
	}
}

// TestRunEncryptionBypassed: cross-node requests that the tunnel does not
// count fail the encryption check, saying what it counted.
func TestRunEncryptionBypassed(t *testing.T) {
	f := &fakeCluster{bypass: true}
	results, err := run(t, f, Options{Encryption: true, Only: regexp.MustCompile("^encryption/")}, "n1", "n2")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Name == "encryption/pod-to-pod-cross-node" && (r.Status != Failed || !strings.Contains(r.Detail, "sent 0 and received 0 bytes meanwhile") || !strings.Contains(r.Detail, "went around it")) {
			t.Errorf("%s: %s %q, want failed, saying what the tunnel counted", r.Name, r.Status, r.Detail)
		}
	}
}

func TestRunLeavesForeignNamespace(t *testing.T) {
	f := &fakeCluster{claimErr: errors.New("namespace membrane-test exists and is not the connectivity test's")}
	if _, err := run(t, f, Options{}, "n1"); err == nil {
		t.Fatal("no error")
	}
	if f.tornDown {
		t.Error("a namespace the test did not claim was removed")
	}
	if !slices.Equal(f.calls, []string{"claim"}) {
		t.Errorf("calls %v", f.calls)
	}
}

func TestRunOnly(t *testing.T) {
	f := &fakeCluster{}
	results, err := run(t, f, Options{L7: true, Flows: true, Only: regexp.MustCompile("^l7-")}, "n1", "n2")
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range statuses(results) {
		if want := map[bool]Status{true: Passed, false: Skipped}[strings.HasPrefix(name, "l7-")]; st != want {
			t.Errorf("%s: %s, want %s", name, st, want)
		}
	}
	// Only the L7 policy is applied.
	if want := []string{"claim", "setup", "apply echo-l7", "delete echo-l7"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls %v, want %v", f.calls, want)
	}
}

func TestRunKeep(t *testing.T) {
	f := &fakeCluster{}
	if _, err := run(t, f, Options{Keep: true}, "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	if f.tornDown {
		t.Error("--keep removed the namespace")
	}
}

package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func numbered(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, "line "+strconv.Itoa(i))
	}
	return out
}

func TestLogTail(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "c.log")
	writeLines(t, log, numbered(50)...)
	got, err := logTail(log, 20)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(got, "\n")
	if len(lines) != 20 || lines[0] != "    line 31" || lines[19] != "    line 50" {
		t.Fatalf("tail of 50 lines:\n%s", got)
	}

	writeLines(t, log, "only one")
	if got, _ := logTail(log, 20); got != "    only one" {
		t.Errorf("tail of a 1-line log: %q", got)
	}

	if err := os.WriteFile(log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := logTail(log, 20); got != "" || err != nil {
		t.Errorf("tail of an empty log: %q, %v", got, err)
	}

	// A log larger than what is read: the cut first line is left out, and
	// long lines are shortened.
	long := strings.Repeat("x", 2*maxTailBytes)
	writeLines(t, log, long, "last-but-one "+strings.Repeat("y", 2*maxLineBytes), "last")
	got, err = logTail(log, 20)
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(got, "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " [...]") || len(lines[0]) > maxLineBytes+20 || lines[1] != "    last" {
		t.Errorf("tail of a large log: %d lines, first %d bytes", len(lines), len(lines[0]))
	}

	if _, err := logTail(filepath.Join(dir, "missing.log"), 20); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tail of a missing log: %v", err)
	}
}

// exited runs a short-lived process that writes n lines and a fatal one to
// its log and exits, and returns it as a cluster process.
func exited(t *testing.T, name, log string, n int) Process {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i"; done; echo "fatal: %s gave up"; exit 1`, n, name))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := startTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := Process{Name: name, PID: cmd.Process.Pid, StartTime: st, Log: log}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the process did not fail")
	}
	return p
}

func TestStartFailureQuotesTheExitedComponent(t *testing.T) {
	dir := t.TempDir()
	s := &State{Name: "demo", Processes: []Process{
		exited(t, "node-runner/demo-node1", filepath.Join(dir, "node-demo-node1.log"), 30),
	}}
	err := s.CheckProcesses()
	var ce *ComponentError
	if !errors.As(err, &ce) || ce.Component != "node-runner/demo-node1" {
		t.Fatalf("CheckProcesses = %v, want the node runner's ComponentError", err)
	}
	err = startFailure("demo", dir, fmt.Errorf("wait for nodes Ready with a PodCIDR: %w", err))
	msg := err.Error()
	for _, want := range []string{
		`bring up cluster "demo": wait for nodes Ready with a PodCIDR: node-runner/demo-node1 exited; see ` + ce.Log,
		"last lines of node-runner/demo-node1 (" + ce.Log + "):\n    line 12\n",
		"    line 30\n    fatal: node-runner/demo-node1 gave up\n",
		"the logs of every component are kept in " + dir,
		"`membrane dev down --name demo` removes them",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 11\n") {
		t.Errorf("error quotes more than %d lines:\n%s", tailLines, msg)
	}
	if !errors.As(err, &ce) {
		t.Error("the ComponentError is not wrapped")
	}
}

func TestStartFailureQuotesTheComponentThatTimedOut(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "kube-apiserver.log")
	writeLines(t, log, numbered(25)...)
	s := &State{Name: "demo", Processes: []Process{{Name: "etcd", Log: filepath.Join(dir, "etcd.log")}, {Name: "kube-apiserver", Log: log}}}
	timeout := fmt.Errorf("wait for kube-apiserver /readyz: %w", context.DeadlineExceeded)
	err := startFailure("demo", dir, s.blame(timeout, "kube-apiserver"))
	msg := err.Error()
	for _, want := range []string{"(kube-apiserver is not ready); see " + log, "last lines of kube-apiserver (" + log + "):\n    line 6\n", "    line 25\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("the timeout is not wrapped")
	}

	// Only timeouts are blamed on a component; without one, the error says
	// where the logs are.
	other := errors.New("apply RBAC: forbidden")
	if got := s.blame(other, "kube-apiserver"); got != other {
		t.Errorf("blame(other) = %v", got)
	}
	msg = startFailure("demo", dir, other).Error()
	if strings.Contains(msg, "last lines") || !strings.Contains(msg, "kept in "+dir) {
		t.Errorf("error without a component:\n%s", msg)
	}
}

// A failed start keeps the logs; `down` then removes them too.
func TestDownAfterFailedStartKeepsLogsUntilDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes below " + DefaultStateRoot)
	}
	name := "unit-" + strconv.Itoa(os.Getpid())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := reserve(Options{Name: name, Nodes: 1, PodCIDR: DefaultPodCIDR, ServiceCIDR: DefaultServiceCIDR}, "")
	if err != nil {
		t.Fatal(err)
	}
	l := s.Layout()
	t.Cleanup(func() { _ = os.RemoveAll(l.StateDir()) })
	agentLog := l.PodLog("membrane-agent/" + name + "-node1")
	writeLines(t, agentLog, "fatal: no bpffs")
	if err := os.MkdirAll(l.PKIDir(), 0o700); err != nil {
		t.Fatal(err)
	}

	if err := down(context.Background(), log, name, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(agentLog); err != nil {
		t.Fatalf("the log is gone after a failed start: %v", err)
	}
	entries, _ := os.ReadDir(l.StateDir())
	if len(entries) != 1 || entries[0].Name() != "logs" {
		t.Errorf("state dir after a failed start holds %v, want only logs", entries)
	}
	if _, err := Load(name); !errors.Is(err, ErrNoCluster) {
		t.Errorf("Load after a failed start: %v, want ErrNoCluster", err)
	}

	if err := Down(context.Background(), log, name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.StateDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after down: %v, want it removed", err)
	}
}

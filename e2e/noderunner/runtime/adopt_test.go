//go:build linux

package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holderEnv makes the test binary a runtime that starts the container in
// the spec it names, prints the container's Process and waits to be killed:
// a node runner that dies while its container runs on.
const holderEnv = "MEMBRANE_RUNTIME_TEST_HOLDER"

// runHolder is called from TestMain.
func runHolder(specJSON string) {
	var s Spec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		os.Exit(2)
	}
	rt := New(slog.New(slog.NewTextHandler(os.Stderr, nil)), "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := rt.Start(ctx, s)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		os.Exit(2)
	}
	raw, _ := json.Marshal(c.Process())
	fmt.Println(string(raw))
	time.Sleep(time.Minute) // killed long before
	os.Exit(3)
}

func TestAdopt(t *testing.T) {
	f := newFixture(t)
	s := f.spec(t, "adopted", "sleep")
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("/proc/self/exe")
	holder.Env = append(os.Environ(), holderEnv+"="+string(raw))
	holder.Stderr = os.Stderr
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read the holder's report: %v", err)
	}
	var p Process
	if err := json.Unmarshal([]byte(line), &p); err != nil {
		t.Fatalf("holder report %q: %v", line, err)
	}
	waitLog(t, s.LogPath, "ready")

	// The holder dies; its container runs on, and nobody reads its output.
	if err := holder.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()
	if !p.Alive() {
		t.Fatal("the container died with the runtime that started it")
	}

	if _, err := f.rt.Adopt(s.StateDir, Process{PID: p.PID, StartTime: p.StartTime + 1}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("adopt with another start time: %v, want ErrNotRunning", err)
	}
	c, err := f.rt.Adopt(s.StateDir, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove() })
	if c.Pid() != p.PID || c.Spec().ID != s.ID {
		t.Errorf("adopted pid %d id %q, want %d %q", c.Pid(), c.Spec().ID, p.PID, s.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout strings.Builder
	if code, err := c.Exec(ctx, []string{"probe", "info", "/etc/hostname", "5"}, nil, &stdout, nil, false); err != nil || code != 5 {
		t.Fatalf("exec in the adopted container: code %d, %v", code, err)
	}
	if !strings.Contains(stdout.String(), "hostname=pod-adopted") {
		t.Errorf("exec ran elsewhere: %s", stdout.String())
	}

	// Stopping it makes it print "term": the adopter logs it.
	if err := c.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code := waitDone(t, c); code != -1 {
		t.Errorf("exit code of an adopted container = %d, want -1 (unknown)", code)
	}
	if p.Alive() {
		t.Error("still running after Stop")
	}
	recs := readLog(t, s.LogPath)
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.stream+" "+r.content)
	}
	if got := strings.Join(lines, "|"); got != "stdout ready|stdout term" {
		t.Errorf("log = %q, want the line before and the line after the adoption", got)
	}
	if err := c.Stop(0); err != nil {
		t.Errorf("stop a stopped adopted container: %v", err)
	}
}

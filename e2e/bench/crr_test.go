package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crrResult is what the load generator (package crr) prints.
type crrResult struct {
	Conns      int     `json:"conns"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"rate"`
	P50Micros  int     `json:"p50Micros"`
	P99Micros  int     `json:"p99Micros"`
	WarmConns  int     `json:"warmConns"`
	FirstError string  `json:"firstError,omitempty"`
}

// buildCRR builds the load generator into a temporary directory.
func buildCRR(ctx context.Context, b *testing.B) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "crr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/membrane-mesh/membrane/e2e/bench/crr")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the load generator: %v\n%s", err, msg)
	}
	return out
}

// load is how every arm runs the load generator.
type load struct {
	bin         string
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	rr          bool // requests over kept connections (crr -rr)
}

// run runs the load generator inside the client pod: in the network
// namespace of its container (found through the pod's cgroup) and in the
// pod's cgroup itself, so the cgroup socket programs apply as to the pod.
func (l load) run(ctx context.Context, c *cluster, targets []netip.AddrPort) (crrResult, error) {
	cg := c.podCgroup()
	raw, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		return crrResult{}, fmt.Errorf("client pod's processes: %w", err)
	}
	fields := strings.Fields(string(raw))
	if len(fields) == 0 {
		return crrResult{}, fmt.Errorf("client pod's cgroup %s is empty", cg)
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		return crrResult{}, fmt.Errorf("client pod's cgroup.procs: %w", err)
	}
	cgFD, err := os.Open(cg)
	if err != nil {
		return crrResult{}, fmt.Errorf("open client pod's cgroup: %w", err)
	}
	defer cgFD.Close()
	var ts []string
	for _, t := range targets {
		ts = append(ts, t.String())
	}
	ctx, cancel := context.WithTimeout(ctx, l.warmup+l.duration+30*time.Second)
	defer cancel()
	args := []string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--", l.bin,
		"-targets", strings.Join(ts, ","),
		"-duration", l.duration.String(), "-warmup", l.warmup.String(),
		"-concurrency", strconv.Itoa(l.concurrency), "-close", "rst"}
	if l.rr {
		args = append(args, "-rr")
	}
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgFD.Fd())}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return crrResult{}, fmt.Errorf("load generator: %v: %s", err, stderr.String())
	}
	var res crrResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return crrResult{}, fmt.Errorf("load generator output %q: %w", stdout.String(), err)
	}
	if res.Conns == 0 {
		return res, fmt.Errorf("load generator to %s: no connection completed (%d errors, first: %s)", strings.Join(ts, ","), res.Errors, res.FirstError)
	}
	return res, nil
}

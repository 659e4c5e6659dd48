package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// l7EnvoyStatsFilter picks the Envoy stats that say where a request's time
// and CPU go: worker threads, connections and requests on each side (how
// well connections are reused), the request-time histograms downstream
// and upstream (the proxy's own share is the difference), and the access
// log's gRPC stream.
const l7EnvoyStatsFilter = `^(server\.concurrency|listener\.[^.]*\.downstream_cx_total|http\.[^.]*\.downstream_(cx|rq)_total|` +
	`http\.[^.]*\.downstream_rq_time|http\.[^.]*\.rbac\..*|cluster\.[^.]*\.upstream_(cx|rq)_total|cluster\.[^.]*\.upstream_rq_time|` +
	`cluster\.[^.]*\.upstream_cx_rx_bytes_total|cluster\.[^.]*\.upstream_cx_tx_bytes_total|access_logs\..*)$`

// l7EnvoyProfile is an Envoy's stats that l7EnvoyStatsFilter picks,
// counters that never moved left out; with dir set, all its stats go to
// dir/name.stats as well.
func l7EnvoyProfile(ctx context.Context, nsPath, admin, name, dir string) (string, error) {
	body, err := l7AdminGet(ctx, nsPath, admin, "/stats?usedonly&filter="+url.QueryEscape(l7EnvoyStatsFilter))
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasSuffix(line, ": 0") || strings.Contains(line, "No recorded values") {
			continue
		}
		fmt.Fprintf(&sb, "    %s\n", line)
	}
	if dir != "" {
		all, err := l7AdminGet(ctx, nsPath, admin, "/stats")
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".stats"), all, 0o644); err != nil {
			return "", err
		}
	}
	return sb.String(), nil
}

// l7Perf samples the processes of some cgroups with perf (call graphs,
// 997 Hz) while the measured rounds run, when perf is installed: the
// agent's Go symbols say where its time goes (Envoy's image binary is
// stripped: its report names the kernel's functions and Envoy's addresses).
type l7Perf struct {
	name, data string
	cmd        *exec.Cmd
	stopped    bool
}

// startPerf records the processes of cgroup dir into dir/name.perf.data;
// nil when perf is missing.
func startPerf(dir, name, cgroup string) (*l7Perf, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil, nil
	}
	raw, err := os.ReadFile(filepath.Join(cgroup, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	pids := strings.Join(strings.Fields(string(raw)), ",")
	if pids == "" {
		return nil, fmt.Errorf("perf %s: no process in %s", name, cgroup)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("perf %s: %w", name, err)
	}
	p := &l7Perf{name: name, data: filepath.Join(dir, name+".perf.data")}
	p.cmd = exec.Command(perf, "record", "-q", "-F", "997", "-g", "-p", pids, "-o", p.data)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf %s: %w", name, err)
	}
	return p, nil
}

// stop ends the recording (SIGINT, as perf expects) and returns its
// report's top entries by symbol, self time; it saves the whole report
// next to the data. Once stopped, it does nothing.
func (p *l7Perf) stop(ctx context.Context) (string, error) {
	if p == nil || p.stopped {
		return "", nil
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	_ = p.cmd.Wait()
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", p.data, "--stdio", "--no-children",
		"--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5").Output()
	if err != nil {
		return "", fmt.Errorf("perf report %s: %w", p.name, err)
	}
	// Inclusive time by function: which of the process's loops the time
	// goes to (Go symbols only: Envoy's are addresses).
	incl, err := exec.CommandContext(ctx, "perf", "report", "-i", p.data, "--stdio", "--children",
		"--sort", "symbol", "-g", "none", "--percent-limit", "2").Output()
	if err != nil {
		return "", fmt.Errorf("perf report %s: %w", p.name, err)
	}
	// User space against kernel.
	dso, err := exec.CommandContext(ctx, "perf", "report", "-i", p.data, "--stdio", "--no-children",
		"--sort", "dso", "-g", "none", "--percent-limit", "1").Output()
	if err != nil {
		return "", fmt.Errorf("perf report %s: %w", p.name, err)
	}
	base := strings.TrimSuffix(p.data, ".perf.data")
	if err := os.WriteFile(base+".perf.txt", out, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".perf-children.txt", incl, 0o644); err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "   self time by DSO:\n%s", perfTop(dso, 6, ""))
	fmt.Fprintf(&sb, "   self time, top:\n%s", perfTop(out, 15, ""))
	if own := perfTop(incl, 15, "github.com/membrane-mesh/"); own != "" {
		fmt.Fprintf(&sb, "   time in and below Membrane's functions, top:\n%s", own)
	}
	return sb.String(), nil
}

// perfTop is the first n entries of a perf report whose line contains
// with.
func perfTop(report []byte, n int, with string) string {
	var sb strings.Builder
	for _, line := range strings.Split(string(report), "\n") {
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" || !strings.Contains(line, with) {
			continue
		}
		if n--; n < 0 {
			break
		}
		fmt.Fprintf(&sb, "    %s\n", strings.Join(strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), "-  -")), " "))
	}
	return sb.String()
}

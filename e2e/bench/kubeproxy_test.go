package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// kubeProxyFlags are the flags every kube-proxy of the bench gets besides
// the mode and the per-node ones. Sync periods stay at their defaults
// (min-sync-period 1s, sync-period 30s), as a cluster runs them.
func kubeProxyFlags(s *localcluster.State, n localcluster.NodeState, mode string) []string {
	return []string{
		"--kubeconfig=" + s.Layout().Kubeconfig(),
		"--hostname-override=" + n.Name,
		"--proxy-mode=" + mode,
		"--cluster-cidr=" + s.PodCIDR,
		"--bind-address=" + n.IP,
		"--healthz-bind-address=" + n.IP + ":10256",
		"--metrics-bind-address=" + n.IP + ":10249",
		// A network namespace cannot set the global nf_conntrack_max, and
		// the node's conntrack timeouts are left as they are.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--v=2",
	}
}

// proxyRunner runs kube-proxy on a cluster in one mode at a time.
type proxyRunner struct {
	c   *cluster
	rep *report
	kp  *kubeProxy
}

func (p *proxyRunner) stop() {
	p.kp.stop()
	p.kp = nil
}

// signal sends sig to every kube-proxy.
func (p *proxyRunner) signal(sig syscall.Signal) {
	if p.kp == nil {
		return
	}
	for _, pr := range p.kp.procs {
		_ = pr.cmd.Process.Signal(sig)
	}
}

// grow creates services up to total with kube-proxy running, in chunks: it
// is paused (SIGSTOP) while a chunk is created and resumed (SIGCONT) to sync
// it. Restarting it on the whole set instead costs a full sync, and
// iptables-nft 1.8.9 (Debian 12) takes minutes to restore 10,000 services'
// 30,000 chains in one go; left running, it would resync back to back and
// slow the creation down. Every other cluster in `also` grows alongside.
func (p *proxyRunner) grow(ctx context.Context, b *testing.B, total int, also ...*cluster) {
	b.Helper()
	const chunk = 2000
	for p.c.created < total {
		next := min(p.c.created+chunk, total)
		p.signal(syscall.SIGSTOP)
		growAll(ctx, b, next, append([]*cluster{p.c}, also...)...)
		if p.kp == nil {
			continue
		}
		vip, err := p.c.clusterIP(ctx, next-1)
		if err != nil {
			b.Fatal(err)
		}
		var ws []*nftWatch
		for _, n := range p.c.state.Nodes {
			w, err := watchKubeProxyRules(n.Netns, p.kp.mode)
			if err != nil {
				b.Fatal(err)
			}
			ws = append(ws, w)
		}
		start := time.Now()
		p.signal(syscall.SIGCONT)
		for _, w := range ws {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			_, err := w.wait(wctx, vip)
			cancel()
			if err != nil {
				b.Fatalf("kube-proxy %s syncing services up to %d: %v (%v)", p.kp.mode, next, err, p.kp.check())
			}
		}
		for _, w := range ws {
			w.Close()
		}
		progress(b, "kube-proxy %s synced services up to %d in %s", p.kp.mode, next, time.Since(start).Round(time.Millisecond))
	}
	p.signal(syscall.SIGCONT)
	if p.kp != nil {
		p.waitAll(ctx, b)
	}
}

// waitAll waits until kube-proxy lists a rule for every service on every node.
func (p *proxyRunner) waitAll(ctx context.Context, b *testing.B) {
	b.Helper()
	err := pollEvery(ctx, 2*time.Second, 10*time.Minute, fmt.Sprintf("kube-proxy %s rules for all %d services", p.kp.mode, p.c.created), func() (bool, error) {
		if err := p.kp.check(); err != nil {
			return false, err
		}
		for _, n := range p.c.state.Nodes {
			r, err := rules(ctx, n, p.kp.mode)
			if err != nil {
				return false, nil
			}
			if countVIPs(r, p.kp.mode, benchPortHTTP) < p.c.created {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func (p *proxyRunner) check() error {
	if p.kp == nil {
		return nil
	}
	return p.kp.check()
}

func (p *proxyRunner) mode() string {
	if p.kp == nil {
		return ""
	}
	return p.kp.mode
}

// switchTo restarts kube-proxy in mode on clean rules (`kube-proxy
// --cleanup` first) and waits until it programmed vip (a service created
// last) on every node.
func (p *proxyRunner) switchTo(ctx context.Context, b *testing.B, mode string, vip netip.AddrPort) {
	b.Helper()
	p.stop()
	if err := p.c.cleanupKubeProxy(ctx); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	kp, err := p.c.startKubeProxy(mode, p.c.state.Layout().LogDir())
	if err != nil {
		b.Fatal(err)
	}
	p.kp = kp
	took, err := p.c.waitKubeProxy(ctx, kp, vip, start)
	if err != nil {
		b.Fatal(err)
	}
	p.rep.addNote("kube-proxy %s started with %d services: all programmed on every node %s after start", mode, p.c.created, took.Round(100*time.Millisecond))
	progress(b, "kube-proxy %s started with %d services: programmed on every node %s after start", mode, p.c.created, took.Round(time.Millisecond))
}

// lastVIP is the frontend of the service created last (the API server's
// own when there is none yet).
func (p *proxyRunner) lastVIP(ctx context.Context, b *testing.B) netip.AddrPort {
	b.Helper()
	if p.c.created == 0 {
		vip, err := p.c.kubernetesVIP(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return vip
	}
	vip, err := p.c.clusterIP(ctx, p.c.created-1)
	if err != nil {
		b.Fatal(err)
	}
	return netip.AddrPortFrom(vip, benchPortHTTP)
}

// kubeProxy is kube-proxy running on every node of a cluster, each inside
// the node's network namespace, in a cgroup below the node's (so cluster
// Down kills it too).
type kubeProxy struct {
	mode  string
	procs []*kubeProxyProc
}

type kubeProxyProc struct {
	node localcluster.NodeState
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (c *cluster) kubeProxyBin() string { return filepath.Join(c.env.toolsDir, "bin", "kube-proxy") }

// cleanupKubeProxy runs `kube-proxy --cleanup` in every node namespace:
// it removes the rules of every mode.
// The nodes go in parallel: with iptables-nft at 10,000 services it takes
// about half a minute.
func (c *cluster) cleanupKubeProxy(ctx context.Context) error {
	errs := make([]error, len(c.state.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.state.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "nsenter", "--net="+n.Netns, "--", c.kubeProxyBin(), "--cleanup", "--v=1").CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("kube-proxy --cleanup on %s: %w\n%s", n.Name, err, out)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startKubeProxy starts kube-proxy in mode on every node.
func (c *cluster) startKubeProxy(mode, logDir string) (*kubeProxy, error) {
	kp := &kubeProxy{mode: mode}
	for _, n := range c.state.Nodes {
		cg := filepath.Join(c.nodeCgroup(n), "kube-proxy")
		if err := os.MkdirAll(cg, 0o755); err != nil {
			kp.stop()
			return nil, fmt.Errorf("create cgroup %s: %w", cg, err)
		}
		p, err := startInNode(n, cg, filepath.Join(logDir, "kube-proxy-"+n.Name+"-"+mode+".log"),
			append([]string{c.kubeProxyBin()}, kubeProxyFlags(c.state, n, mode)...))
		if err != nil {
			kp.stop()
			return nil, err
		}
		kp.procs = append(kp.procs, p)
	}
	return kp, nil
}

func startInNode(n localcluster.NodeState, cgroupDir, logPath string, argv []string) (*kubeProxyProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy log: %w", err)
	}
	defer logf.Close()
	cg, err := os.Open(cgroupDir)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	defer cg.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Netns, "--"}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kube-proxy on %s: %w", n.Name, err)
	}
	p := &kubeProxyProc{node: n, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// check fails when a kube-proxy has exited.
func (kp *kubeProxy) check() error {
	for _, p := range kp.procs {
		select {
		case <-p.done:
			return fmt.Errorf("kube-proxy (%s) on %s exited: %s; last lines of %s:\n%s", kp.mode, p.node.Name, p.cmd.ProcessState, p.log, tail(p.log, 20))
		default:
		}
	}
	return nil
}

// stop ends every kube-proxy (TERM, then KILL after 5 s); safe to repeat.
func (kp *kubeProxy) stop() {
	if kp == nil {
		return
	}
	for _, p := range kp.procs {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // if paused
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range kp.procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// rules returns kube-proxy's rules on node n: the iptables nat table or the
// nftables kube-proxy table.
func rules(ctx context.Context, n localcluster.NodeState, mode string) (string, error) {
	args := []string{"--net=" + n.Netns, "--"}
	if mode == "iptables" {
		args = append(args, "iptables-save", "-t", "nat")
	} else {
		args = append(args, "nft", "list", "table", "ip", "kube-proxy")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", args...).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return "", fmt.Errorf("list rules on %s: %w: %s", n.Name, err, ee.Stderr)
	}
	return string(out), err
}

// hasVIP reports whether the rules make the TCP frontend vip reachable.
func hasVIP(rules, mode string, vip netip.AddrPort) bool {
	if mode == "iptables" {
		for _, l := range strings.Split(rules, "\n") {
			if strings.HasPrefix(l, "-A KUBE-SERVICES -d "+vip.Addr().String()+"/32 ") && strings.Contains(l, " --dport "+strconv.Itoa(int(vip.Port()))+" ") {
				return true
			}
		}
		return false
	}
	return strings.Contains(rules, vip.Addr().String()+" . tcp . "+strconv.Itoa(int(vip.Port()))+" : goto ")
}

// countVIPs counts the TCP frontends on port that the rules make reachable.
func countVIPs(rules, mode string, port uint16) int {
	n := 0
	p := strconv.Itoa(int(port))
	for _, l := range strings.Split(rules, "\n") {
		if mode == "iptables" {
			if strings.HasPrefix(l, "-A KUBE-SERVICES -d ") && strings.Contains(l, " --dport "+p+" ") {
				n++
			}
			continue
		}
		// nft prints a map's elements several to a line.
		n += strings.Count(l, " . tcp . "+p+" : goto ")
	}
	return n
}

// servicesPosition returns where the KUBE-SERVICES rule of vip is (1-based)
// and how many rules the chain has: kube-proxy writes them in map order, so
// the position is random, and the first packet of every connection walks the
// chain until it matches.
func servicesPosition(rules string, vip netip.Addr) (pos, total int) {
	sc := bufio.NewScanner(strings.NewReader(rules))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			continue
		}
		total++
		if strings.HasPrefix(l, "-A KUBE-SERVICES -d "+vip.String()+"/32 ") {
			pos = total
		}
	}
	return pos, total
}

// lastServiceRule returns the VIP whose rule comes last among the rules of
// TCP services on port in KUBE-SERVICES (the longest walk for a first
// packet), its position and the chain's length.
func lastServiceRule(rules string, port uint16) (vip netip.Addr, pos, total int) {
	p := " --dport " + strconv.Itoa(int(port)) + " "
	for _, l := range strings.Split(rules, "\n") {
		if !strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			continue
		}
		total++
		rest, ok := strings.CutPrefix(l, "-A KUBE-SERVICES -d ")
		if !ok || !strings.Contains(l, p) {
			continue
		}
		addr, _, _ := strings.Cut(rest, "/32 ")
		if a, err := netip.ParseAddr(addr); err == nil {
			vip, pos = a, total
		}
	}
	return vip, pos, total
}

// waitKubeProxy waits until kube-proxy programmed vip on every node, and
// returns how long after start (listing the rules every second: at 10,000
// services a listing takes a while, and CPU from kube-proxy).
func (c *cluster) waitKubeProxy(ctx context.Context, kp *kubeProxy, vip netip.AddrPort, start time.Time) (time.Duration, error) {
	err := pollEvery(ctx, time.Second, 5*time.Minute, "kube-proxy ("+kp.mode+") rules on every node", func() (bool, error) {
		if err := kp.check(); err != nil {
			return false, err
		}
		for _, n := range c.state.Nodes {
			r, err := rules(ctx, n, kp.mode)
			if err != nil {
				return false, nil
			}
			if !hasVIP(r, kp.mode, vip) {
				return false, nil
			}
		}
		return true, nil
	})
	return time.Since(start), err
}

package bench

// BenchmarkWireGuardVsUnderlay: pod-to-pod across two nodes with the
// WireGuard device (the embedded one on a kernel without WireGuard) against
// the plain underlay, on one cluster, switching the agents' encryption
// between arms. Throughput is iperf3 (the machine's binary, run in the
// pods' network namespaces and cgroups); request/response rate and latency
// are a TCP_RR-style ping-pong of 1 byte over one connection; cost is
// CPU-seconds per GB moved (whole machine from /proc/stat, the agents
// (where the embedded device runs) and iperf3's pods from their cgroups).
//
//	MEMBRANE_BENCH_WG_ROUNDS=2        rounds per arm, alternating order
//	MEMBRANE_BENCH_WG_DURATION=5s     iperf3 and ping-pong time per round

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

const (
	wgBenchCluster = "bench-wg"
	wgBenchNS      = "wgbench"
	wgIperfPort    = 5201
	wgRRPort       = 5202
)

// wgArm is one side of the comparison.
type wgArm struct {
	name string // "wireguard" or "underlay"
	mode string // localcluster encryption mode
	tput []float64
	cost []wgCost
	rr   []wgRR
	agg  wgAggregation // of the last round
}

// wgAggregation is the mean size of the packets (skbs) each stage handles
// during an iperf3 run, in bytes: far above the MTU where an offload
// (TSO, UDP GSO, GRO) aggregates.
type wgAggregation struct {
	tunRead, underlayTx, underlayRx, tunWrite float64
}

type wgCost struct{ machine, agents, iperf float64 } // CPU-seconds per GB

type wgRR struct {
	rate     float64 // round trips per second
	p50, p99 time.Duration
}

type wgBench struct {
	b        *testing.B
	s        *localcluster.State
	client   kubernetes.Interface
	server   *corev1.Pod // node 2
	clientP  *corev1.Pod // node 1
	duration time.Duration
}

func BenchmarkWireGuardVsUnderlay(b *testing.B) {
	e := wgBenchEnv(b)
	rounds := 2
	if v, err := strconv.Atoi(os.Getenv("MEMBRANE_BENCH_WG_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	duration := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("MEMBRANE_BENCH_WG_DURATION")); err == nil && v > 0 {
		duration = v
	}
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	_ = localcluster.Down(ctx, e.log, wgBenchCluster)
	s, err := localcluster.Up(ctx, e.log, localcluster.Options{
		Name: wgBenchCluster, Nodes: 2, PodCIDR: "10.236.0.0/16", ServiceCIDR: "10.93.0.0/16",
		ToolsDir: e.toolsDir, BinDir: e.binDir, Encryption: localcluster.EncryptionWireGuard,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := localcluster.Down(context.Background(), e.log, wgBenchCluster); err != nil {
			b.Errorf("remove %s: %v", wgBenchCluster, err)
		}
	})
	client, err := localcluster.Client(s.Layout().Kubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	w := &wgBench{b: b, s: s, client: client, duration: duration}
	w.deploy(ctx)

	srv := w.startIperfServer(ctx)
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	rrDone := w.startRRServer()
	defer rrDone()

	fmt.Printf("bench-wg: load average before: %s", wgLoadAvg())
	crypto, err := wgCryptoCost(1420, 300*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { fmt.Printf("bench-wg: load average after: %s", wgLoadAvg()) }()
	arms := []*wgArm{{name: "wireguard", mode: localcluster.EncryptionWireGuard}, {name: "underlay", mode: ""}}
	current := localcluster.EncryptionWireGuard
	b.ResetTimer()
	for r := range rounds {
		order := arms
		if r%2 == 1 {
			order = []*wgArm{arms[1], arms[0]}
		}
		for _, a := range order {
			if a.mode != current {
				if err := localcluster.SetEncryption(ctx, e.log, e.toolsDir, wgBenchCluster, a.mode); err != nil {
					b.Fatal(err)
				}
				current = a.mode
			}
			w.waitPath(ctx, a.mode != "")
			before := w.linkStats(ctx)
			gbps, cost := w.iperf(ctx)
			a.agg = w.aggregation(before, w.linkStats(ctx))
			rr := w.pingPong()
			a.tput, a.cost, a.rr = append(a.tput, gbps), append(a.cost, cost), append(a.rr, rr)
			fmt.Printf("bench-wg: round %d %-9s  %6.2f Gbit/s  CPU-s/GB machine %.2f agents %.2f iperf3 %.2f  RR %.0f/s p50 %s p99 %s\n",
				r+1, a.name, gbps, cost.machine, cost.agents, cost.iperf, rr.rate, rr.p50, rr.p99)
		}
	}
	b.StopTimer()
	wg, ul := arms[0], arms[1]
	ratio := wgMedian(wg.tput) / wgMedian(ul.tput)
	fmt.Printf("\nWireGuard (%s device, MTU 1420) vs plain underlay, pod to pod across nodes, median of %d rounds:\n", w.backend(ctx), rounds)
	fmt.Printf("  %-10s %12s %12s %12s %12s %14s %14s %14s\n", "", "Gbit/s", "RR/s", "RR p50", "RR p99", "CPU-s/GB all", "CPU-s/GB agent", "CPU-s/GB iperf")
	for _, a := range arms {
		c := wgMedianCost(a.cost)
		rr := wgMedianRR(a.rr)
		fmt.Printf("  %-10s %12.2f %12.0f %12s %12s %14.2f %14.2f %14.2f\n", a.name, wgMedian(a.tput), rr.rate, rr.p50, rr.p99, c.machine, c.agents, c.iperf)
	}
	fmt.Printf("  RR rate ratio wireguard/underlay:    %.1f%%\n", 100*wgMedianRR(wg.rr).rate/wgMedianRR(ul.rr).rate)
	fmt.Printf("  mean bytes per packet (skb) while iperf3 runs (above the MTU: offloads aggregate):\n")
	fmt.Printf("    %-10s %18s %18s %18s %18s\n", "", "TUN read (TSO)", "underlay tx", "underlay rx", "TUN write (GRO)")
	for _, a := range arms {
		fmt.Printf("    %-10s %18.0f %18.0f %18.0f %18.0f\n", a.name, a.agg.tunRead, a.agg.underlayTx, a.agg.underlayRx, a.agg.tunWrite)
	}
	wgPrintFloor(crypto, wg, ul)
	recordSummary(b, wgSummary(crypto, wg, ul)...)
	b.ReportMetric(wgMedian(wg.tput), "wg-Gbit/s")
	b.ReportMetric(wgMedian(ul.tput), "underlay-Gbit/s")
	b.ReportMetric(100*ratio, "wg/underlay-%")
	b.ReportMetric(wgMedianCost(wg.cost).machine, "wg-CPUs/GB")
	b.ReportMetric(wgMedianCost(ul.cost).machine, "underlay-CPUs/GB")
	b.ReportMetric(wgMedian(wgClusterCost(wg.cost)), "wg-cluster-CPUs/GB")
	b.ReportMetric(wgMedian(wgClusterCost(ul.cost)), "underlay-cluster-CPUs/GB")
	b.ReportMetric(crypto, "crypto-CPUs/GB")
}

// wgBenchEnv skips unless the benchmark can run, and finds the tools.
func wgBenchEnv(b *testing.B) env {
	b.Helper()
	e := benchEnv(b, "TUN")
	for _, tool := range []string{"nsenter", "iperf3", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("bench: %s not found: run `make tools` (Debian packages util-linux, iperf3, iproute2)", tool)
		}
	}
	return e
}

// deploy starts an idle pod on each node (the processes under test join
// their network namespaces and cgroups).
func (w *wgBench) deploy(ctx context.Context) {
	b := w.b
	if _, err := w.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: wgBenchNS}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	pod := func(name, node string) *corev1.Pod {
		p, err := w.client.CoreV1().Pods(wgBenchNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				NodeName:                      node,
				TerminationGracePeriodSeconds: ptr.To(int64(1)),
				Containers:                    []corev1.Container{{Name: "idle", Image: "busybox:1.36", Command: []string{"sleep", "3600"}}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	server, client := pod("server", w.s.Nodes[1].Name), pod("client", w.s.Nodes[0].Name)
	deadline := time.Now().Add(90 * time.Second)
	for {
		sp, err1 := w.client.CoreV1().Pods(wgBenchNS).Get(ctx, server.Name, metav1.GetOptions{})
		cp, err2 := w.client.CoreV1().Pods(wgBenchNS).Get(ctx, client.Name, metav1.GetOptions{})
		if err1 == nil && err2 == nil && sp.Status.PodIP != "" && cp.Status.PodIP != "" && sp.Status.Phase == corev1.PodRunning && cp.Status.Phase == corev1.PodRunning {
			w.server, w.clientP = sp, cp
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("bench pods not running: %v %v", err1, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (w *wgBench) netns(p *corev1.Pod) string {
	return filepath.Join(w.s.Layout().RunDir(), "netns", p.Spec.NodeName, string(p.UID))
}

func (w *wgBench) cgroup(p *corev1.Pod) string {
	return filepath.Join(w.s.Layout().CgroupDir(w.s.CgroupRoot), p.Spec.NodeName, "pods", string(p.UID))
}

// inPod prepares argv to run like a process of pod p: in its network
// namespace (nsenter) and its cgroup.
func (w *wgBench) inPod(ctx context.Context, p *corev1.Pod, argv ...string) (*exec.Cmd, func()) {
	cg, err := os.Open(w.cgroup(p))
	if err != nil {
		w.b.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + w.netns(p), "--"}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	return cmd, func() { cg.Close() }
}

func (w *wgBench) startIperfServer(ctx context.Context) *exec.Cmd {
	cmd, done := w.inPod(ctx, w.server, "iperf3", "-s", "-p", strconv.Itoa(wgIperfPort), "-B", w.server.Status.PodIP)
	defer done()
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		w.b.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	return cmd
}

// waitPath waits until the client reaches the server over the expected
// path: through the device with encryption, else without it.
func (w *wgBench) waitPath(ctx context.Context, encrypted bool) {
	node := w.s.Nodes[0]
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := exec.CommandContext(ctx, "nsenter", "--net="+node.Netns, "--", "ip", "route", "get", w.server.Status.PodIP).CombinedOutput()
		viaWG := strings.Contains(string(out), "dev membrane_wg0")
		if viaWG == encrypted && w.rrOnce() == nil {
			return
		}
		if time.Now().After(deadline) {
			w.b.Fatalf("path to %s (encrypted=%v) not ready: %s", w.server.Status.PodIP, encrypted, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// iperf runs one TCP stream client→server and returns Gbit/s and its cost.
func (w *wgBench) iperf(ctx context.Context) (float64, wgCost) {
	secs := int(w.duration.Seconds())
	ctx, cancel := context.WithTimeout(ctx, w.duration+30*time.Second)
	defer cancel()
	cmd, done := w.inPod(ctx, w.clientP, "iperf3", "-c", w.server.Status.PodIP, "-p", strconv.Itoa(wgIperfPort), "-t", strconv.Itoa(secs), "-J")
	defer done()
	before := w.cpu()
	out, err := cmd.Output()
	after := w.cpu()
	if err != nil {
		w.b.Fatalf("iperf3: %v: %s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		w.b.Fatalf("iperf3 JSON: %v", err)
	}
	gb := res.End.SumReceived.Bytes / 1e9
	c := wgCost{
		machine: (after.machine - before.machine) / gb,
		agents:  (after.agents - before.agents) / gb,
		iperf:   (after.iperf - before.iperf) / gb,
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, c
}

// wgLinkCount is one direction of a link's counters.
type wgLinkCount struct{ bytes, packets float64 }

// wgLinks: the client node's transmit and the server node's receive
// counters of the underlay (eth0) and the WireGuard device.
type wgLinks struct{ underlayTx, tunTx, underlayRx, tunRx wgLinkCount }

func (w *wgBench) linkStats(ctx context.Context) wgLinks {
	read := func(netns string) map[string][2]wgLinkCount {
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+netns, "--", "ip", "-s", "-j", "link", "show").Output()
		if err != nil {
			w.b.Fatalf("ip -s link in %s: %v", netns, err)
		}
		var links []struct {
			Name  string `json:"ifname"`
			Stats struct {
				Rx struct{ Bytes, Packets float64 } `json:"rx"`
				Tx struct{ Bytes, Packets float64 } `json:"tx"`
			} `json:"stats64"`
		}
		if err := json.Unmarshal(out, &links); err != nil {
			w.b.Fatalf("ip -s -j link: %v", err)
		}
		m := map[string][2]wgLinkCount{}
		for _, l := range links {
			m[l.Name] = [2]wgLinkCount{{l.Stats.Rx.Bytes, l.Stats.Rx.Packets}, {l.Stats.Tx.Bytes, l.Stats.Tx.Packets}}
		}
		return m
	}
	c, s := read(w.s.Nodes[0].Netns), read(w.s.Nodes[1].Netns)
	return wgLinks{underlayTx: c["eth0"][1], tunTx: c["membrane_wg0"][1], underlayRx: s["eth0"][0], tunRx: s["membrane_wg0"][0]}
}

// aggregation is the mean packet size between two readings (0 where
// nothing moved, as through the WireGuard device of the plain arm). The
// TUN device's transmit is what wireguard-go reads, its receive what it
// writes.
func (w *wgBench) aggregation(before, after wgLinks) wgAggregation {
	per := func(b, a wgLinkCount) float64 {
		if a.packets-b.packets < 100 {
			return 0
		}
		return (a.bytes - b.bytes) / (a.packets - b.packets)
	}
	return wgAggregation{
		tunRead: per(before.tunTx, after.tunTx), underlayTx: per(before.underlayTx, after.underlayTx),
		underlayRx: per(before.underlayRx, after.underlayRx), tunWrite: per(before.tunRx, after.tunRx),
	}
}

type wgCPU struct{ machine, agents, iperf float64 } // CPU-seconds

// cpu reads the machine's busy time, the agents' and the two pods'.
func (w *wgBench) cpu() wgCPU {
	var c wgCPU
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])
		// cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			n, _ := strconv.ParseFloat(v, 64)
			if i != 3 && i != 4 && i < 8 {
				c.machine += n / 100 // USER_HZ
			}
		}
	}
	// The agents are the pods of the chart's DaemonSet: their cgroups.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range w.s.Nodes {
		if p, err := localcluster.AgentPod(ctx, w.client, n.Name); err == nil {
			c.agents += wgCgroupCPU(w.cgroup(p))
		}
	}
	for _, p := range []*corev1.Pod{w.server, w.clientP} {
		c.iperf += wgCgroupCPU(w.cgroup(p))
	}
	return c
}

func wgCgroupCPU(dir string) float64 {
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n / 1e6
		}
	}
	return 0
}

func (w *wgBench) backend(ctx context.Context) string {
	out, _ := exec.CommandContext(ctx, "nsenter", "--net="+w.s.Nodes[0].Netns, "--", "ip", "-d", "link", "show", "membrane_wg0").CombinedOutput()
	if strings.Contains(string(out), "wireguard") {
		return "kernel"
	}
	return "embedded"
}

// wgInNetns runs fn on an OS thread moved into the network namespace at
// path; sockets fn makes live there. The thread is discarded afterwards.
func wgInNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// startRRServer serves the ping-pong in the server pod's namespace.
func (w *wgBench) startRRServer() func() {
	var ln net.Listener
	if err := wgInNetns(w.netns(w.server), func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(w.server.Status.PodIP, strconv.Itoa(wgRRPort)))
		return err
	}); err != nil {
		w.b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return func() { ln.Close(); <-done }
}

func (w *wgBench) dialRR() (net.Conn, error) {
	var c net.Conn
	err := wgInNetns(w.netns(w.clientP), func() error {
		var err error
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(w.server.Status.PodIP, strconv.Itoa(wgRRPort)), 2*time.Second)
		return err
	})
	return c, err
}

func (w *wgBench) rrOnce() error {
	c, err := w.dialRR()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := []byte{1}
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err = io.ReadFull(c, buf)
	return err
}

// pingPong: 1 byte each way over one connection, back to back, for the
// round duration (at most a million round trips).
func (w *wgBench) pingPong() wgRR {
	c, err := w.dialRR()
	if err != nil {
		w.b.Fatal(err)
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = c.SetDeadline(time.Now().Add(w.duration + 10*time.Second))
	buf := []byte{1}
	var lat []time.Duration
	start := time.Now()
	for time.Since(start) < w.duration && len(lat) < 1_000_000 {
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			w.b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			w.b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	return wgRR{rate: float64(len(lat)) / elapsed.Seconds(), p50: lat[len(lat)/2].Round(time.Microsecond), p99: lat[len(lat)*99/100].Round(time.Microsecond)}
}

// The tunnel's targets: at most 3.5 CPU-seconds per GB, and at least twice
// the throughput share of plain veth the embedded device had before its
// offloads were tuned (12%).
const (
	wgTargetCost  = 3.5
	wgTargetShare = 24.0 // % of plain veth
)

// wgPrintFloor compares the tunnel with its floor: the cipher's own cost
// (seal + open of every byte, measured in this process) plus what the same
// transfer costs without the tunnel, measured in the same run. The cost
// counted is the CPU time of the cluster's processes (the agents, where the
// embedded device runs, and the iperf3 pods, whose cgroups are charged the
// kernel's TCP work done in their context): the machine-wide figure also
// counts whatever else runs on the shared machine.
func wgPrintFloor(crypto float64, wg, ul *wgArm) {
	tunnel, plain := wgMedian(wgClusterCost(wg.cost)), wgMedian(wgClusterCost(ul.cost))
	floor := crypto + plain
	share := 100 * wgMedian(wg.tput) / wgMedian(ul.tput)
	metOr := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	fmt.Printf("  cost, CPU-s/GB of the cluster's processes (agents + iperf3 pods):\n")
	fmt.Printf("    crypto (Go ChaCha20-Poly1305, seal+open, 1420-byte packets): %.2f\n", crypto)
	fmt.Printf("    plain underlay: %.2f   floor (crypto + plain): %.2f\n", plain, floor)
	fmt.Printf("    tunnel: %.2f = %.1fx the floor (target <= %.1f: %s)\n", tunnel, tunnel/floor, wgTargetCost, metOr(tunnel <= wgTargetCost))
	fmt.Printf("  throughput: %.2f Gbit/s = %.1f%% of plain veth (%.2f Gbit/s) (target >= %.0f%%: %s)\n",
		wgMedian(wg.tput), share, wgMedian(ul.tput), wgTargetShare, metOr(share >= wgTargetShare))
	fmt.Printf("  TCP_RR added latency: p50 +%s, p99 +%s\n\n",
		wgMedianRR(wg.rr).p50-wgMedianRR(ul.rr).p50, wgMedianRR(wg.rr).p99-wgMedianRR(ul.rr).p99)
}

// wgLoadAvg is /proc/loadavg: the benchmark shares the machine's 2 cores
// with whatever else runs, and the embedded device suffers most from it.
func wgLoadAvg() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	return string(raw)
}

func wgMedian(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func wgMedianCost(v []wgCost) wgCost {
	var m, a, i []float64
	for _, c := range v {
		m, a, i = append(m, c.machine), append(a, c.agents), append(i, c.iperf)
	}
	return wgCost{wgMedian(m), wgMedian(a), wgMedian(i)}
}

// wgClusterCost is each round's cost in the cluster's processes.
func wgClusterCost(v []wgCost) []float64 {
	var c []float64
	for _, x := range v {
		c = append(c, x.agents+x.iperf)
	}
	return c
}

func wgMedianRR(v []wgRR) wgRR {
	s := slices.Clone(v)
	slices.SortFunc(s, func(a, b wgRR) int {
		switch {
		case a.rate < b.rate:
			return -1
		case a.rate > b.rate:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

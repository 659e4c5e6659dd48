package bench

// BenchmarkFQDNProxy: what DNS-aware policy costs, on one 2-node cluster.
//
// Workload, all on node 1: a busybox pod "client" selected by a policy with
// a DNS rule (kube-dns, UDP 53, matchPattern "*": its questions go through
// node 1's DNS proxy) and toFQDNs *.fresh.example.com on TCP 80; a busybox
// pod "direct" without policy. The load generator is this process, its
// sockets made in the pods' network namespaces, asking the CoreDNS pod on
// node 1 directly (a new UDP socket per question, as a resolver does).
//
//   - latency: "kubernetes.default.svc.cluster.local. A" from direct and
//     from client (through the proxy), in rounds of 1,000 taking turns;
//     p50/p99 per arm and the added p99 (target: at most 1 ms).
//   - proxy CPU: node 1's agent (the proxy runs in it), from /proc, per
//     1,000 questions of the client's arm.
//   - answer to connection: 1,000 fresh names n<i>.fresh.example.com, each
//     with an address of its own (100.64.0.0/22 on the world host api):
//     the client asks, then connects to the answer's address on port 80;
//     the time from the answer to the connection established, and the
//     connections that failed or needed a SYN retransmission (a dropped
//     first packet: 1 s or more), with node 1's POLICY_DENIED drops.
//
//	MEMBRANE_BENCH_DNS_QUERIES=10000   measured questions per latency arm
//	MEMBRANE_BENCH_DNS_FRESH=1000      fresh names

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/worldhost"
)

const (
	fqdnBenchCluster = "bench-fqdn"
	fqdnBenchPodCIDR = "10.238.0.0/16"
	fqdnBenchNS      = "bench-fqdn"
	fqdnLatencyName  = "kubernetes.default.svc.cluster.local."
	fqdnRounds       = 10
)

// fqdnFreshRange holds the fresh names' addresses: outside every range of
// the cluster, on the world host api.
var fqdnFreshRange = netip.MustParsePrefix("100.64.0.0/22")

func BenchmarkFQDNProxy(b *testing.B) {
	e := benchEnv(b, "network namespaces, eBPF, TPROXY")
	queries := envInt(b, "MEMBRANE_BENCH_DNS_QUERIES", 10000, fqdnRounds)
	fresh := envInt(b, "MEMBRANE_BENCH_DNS_FRESH", 1000, 1)
	if fresh > 1000 {
		b.Fatalf("MEMBRANE_BENCH_DNS_FRESH=%d: at most 1000 (the addresses of %s)", fresh, fqdnFreshRange)
	}
	ctx := benchContext(b)
	begin := time.Now()
	c := upCluster(ctx, b, e, fqdnBenchCluster, fqdnBenchPodCIDR, false)
	defer c.down()
	node := c.state.Nodes[0]
	l := c.state.Layout()

	// The fresh names and their addresses.
	zone, err := worldhost.ReadZone(l.WorldZoneFile())
	if err != nil {
		b.Fatal(err)
	}
	freshIP := func(i int) netip.Addr {
		a := fqdnFreshRange.Addr().As4()
		return netip.AddrFrom4([4]byte{a[0], a[1], a[2] + byte(i/250), byte(1 + i%250)})
	}
	for i := range fresh {
		zone.Records[worldhost.Canonical(fmt.Sprintf("n%d.fresh.%s", i, localcluster.WorldZone))] = worldhost.Record{IPs: []netip.Addr{freshIP(i)}, TTL: 300}
	}
	if err := worldhost.WriteZone(l.WorldZoneFile(), zone); err != nil {
		b.Fatal(err)
	}
	if err := localcluster.AddWorldRange(c.state, "api", fqdnFreshRange); err != nil {
		b.Fatal(err)
	}

	pods, err := fqdnDeploy(ctx, c, node.Name)
	if err != nil {
		b.Fatal(err)
	}
	client, direct := pods[0], pods[1]
	nsOf := func(p *corev1.Pod) string {
		return filepath.Join(l.RunDir(), "netns", p.Spec.NodeName, string(p.UID))
	}
	coredns, err := fqdnCoreDNS(ctx, c, node.Name)
	if err != nil {
		b.Fatal(err)
	}
	server := netip.AddrPortFrom(coredns, 53)
	if err := kubectlApply(ctx, e, l.Kubeconfig(), fqdnClientPolicy); err != nil {
		b.Fatal(err)
	}
	metrics := fmt.Sprintf("http://%s:%d/metrics", node.IP, localcluster.AgentPort)
	// The policy is in force once the client's questions reach the proxy.
	err = poll(ctx, 2*time.Minute, "the client's questions answered by node 1's DNS proxy", func() (bool, error) {
		if _, err := dnsQuery(nsOf(client), server, fqdnLatencyName); err != nil {
			return false, nil
		}
		n, err := metricSum(metrics, "membrane_dns_requests_total{")
		return err == nil && n > 0, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	progress(b, "client %s and direct %s on %s, CoreDNS %s; the client's DNS goes through the proxy", client.Status.PodIP, direct.Status.PodIP, node.Name, coredns)

	agentPID, err := localcluster.AgentPID(b.Context(), c.state.Name, node.Name)
	if err != nil {
		b.Fatal(err)
	}

	// Latency, arms taking turns.
	type arm struct {
		name string
		ns   string
		lat  []time.Duration
		cpu  time.Duration
	}
	arms := []*arm{{name: "direct", ns: nsOf(direct)}, {name: "proxy", ns: nsOf(client)}}
	for _, a := range arms {
		for range 200 { // warm-up
			if _, err := dnsQuery(a.ns, server, fqdnLatencyName); err != nil {
				b.Fatalf("%s: warm-up: %v", a.name, err)
			}
		}
	}
	perRound := queries / fqdnRounds
	for r := range fqdnRounds {
		for j := range arms {
			a := arms[(r+j)%len(arms)]
			cpu0, err := procCPU(agentPID)
			if err != nil {
				b.Fatal(err)
			}
			for range perRound {
				d, err := dnsQuery(a.ns, server, fqdnLatencyName)
				if err != nil {
					b.Fatalf("%s: round %d: %v", a.name, r+1, err)
				}
				a.lat = append(a.lat, d)
			}
			cpu1, err := procCPU(agentPID)
			if err != nil {
				b.Fatal(err)
			}
			a.cpu += cpu1 - cpu0
		}
	}
	for _, a := range arms {
		slices.Sort(a.lat)
		progress(b, "%-6s %d questions: p50 %s p99 %s, agent CPU %s", a.name, len(a.lat), us(percentile(a.lat, 0.5)), us(percentile(a.lat, 0.99)), a.cpu.Round(time.Millisecond))
	}

	// Fresh names: answer to connection.
	deniedBefore, err := metricSum(metrics, `membrane_flow_drops_total{protocol="TCP",reason="POLICY_DENIED"}`)
	if err != nil {
		b.Fatal(err)
	}
	var toConn []time.Duration
	failed, retransmitted := 0, 0
	for i := range fresh {
		name := fmt.Sprintf("n%d.fresh.%s.", i, localcluster.WorldZone)
		ans, err := dnsAnswer(nsOf(client), server, name)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		if ans.ip != freshIP(i) {
			b.Fatalf("%s: answer %s, want %s", name, ans.ip, freshIP(i))
		}
		_, err = dialIn(nsOf(client), netip.AddrPortFrom(ans.ip, 80), 3*time.Second)
		d := time.Since(ans.at) // from the answer, not from the dial
		if err != nil {
			failed++
			continue
		}
		if d >= time.Second {
			retransmitted++
		}
		toConn = append(toConn, d)
	}
	deniedAfter, err := metricSum(metrics, `membrane_flow_drops_total{protocol="TCP",reason="POLICY_DENIED"}`)
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(toConn)

	direct0, proxy0 := arms[0], arms[1]
	added50 := percentile(proxy0.lat, 0.5) - percentile(direct0.lat, 0.5)
	added99 := percentile(proxy0.lat, 0.99) - percentile(direct0.lat, 0.99)
	cpuPer1000 := time.Duration(0)
	if n := len(proxy0.lat); n > 0 {
		cpuPer1000 = (proxy0.cpu - direct0.cpu) * 1000 / time.Duration(n)
	}
	fmt.Printf("\nDNS-aware policy on %s (%d questions per arm, %d fresh names; %s)\n", node.Name, queries, fresh, time.Since(begin).Round(time.Second))
	fmt.Printf("  latency      direct  p50 %s  p99 %s\n", us(percentile(direct0.lat, 0.5)), us(percentile(direct0.lat, 0.99)))
	fmt.Printf("               proxy   p50 %s  p99 %s\n", us(percentile(proxy0.lat, 0.5)), us(percentile(proxy0.lat, 0.99)))
	fmt.Printf("               added   p50 %s  p99 %s  (target p99 <= 1000 µs: %s)\n", us(added50), us(added99), verdict(added99 <= time.Millisecond))
	fmt.Printf("  agent CPU    %s per 1,000 questions through the proxy (%s for the proxy arm, %s for the direct arm)\n",
		cpuPer1000.Round(10*time.Microsecond), proxy0.cpu.Round(time.Millisecond), direct0.cpu.Round(time.Millisecond))
	if len(toConn) > 0 {
		fmt.Printf("  answer to connection established, %d fresh names: p50 %s  p99 %s  max %s\n", fresh, us(percentile(toConn, 0.5)), us(percentile(toConn, 0.99)), us(toConn[len(toConn)-1]))
	}
	fmt.Printf("  failed connections %d, with a retransmitted SYN %d, POLICY_DENIED TCP drops on %s during them %.0f (target 0: %s)\n",
		failed, retransmitted, node.Name, deniedAfter-deniedBefore, verdict(failed == 0 && retransmitted == 0 && deniedAfter == deniedBefore))
	b.ReportMetric(float64(added99.Microseconds()), "added-p99-µs")
	b.ReportMetric(float64(cpuPer1000.Microseconds()), "cpu-µs/1000q")
	if len(toConn) > 0 {
		b.ReportMetric(float64(percentile(toConn, 0.99).Microseconds()), "answer-to-conn-p99-µs")
	}
	b.ReportMetric(float64(failed+retransmitted), "first-packet-drops")
	recordSummary(b, fqdnSummary(direct0.lat, proxy0.lat, failed+retransmitted, deniedAfter-deniedBefore)...)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func envInt(b *testing.B, key string, def, least int) int {
	b.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want a number >= %d", key, v, least)
	}
	return n
}

// fqdnClientPolicy sends the client's DNS to kube-dns through the proxy and
// allows TCP 80 to the fresh names.
const fqdnClientPolicy = `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: client, namespace: ` + fqdnBenchNS + `}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toFQDNs: [{matchPattern: "*.fresh.example.com"}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: "53", protocol: UDP}]
      rules: {dns: [{matchPattern: "*"}]}
`

func kubectlApply(ctx context.Context, e env, kubeconfig, manifest string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(e.toolsDir, "bin", "kubectl"), "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	return nil
}

// fqdnDeploy starts client and direct on node and returns them running.
func fqdnDeploy(ctx context.Context, c *cluster, node string) ([]*corev1.Pod, error) {
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fqdnBenchNS}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	names := []string{"client", "direct"}
	for _, n := range names {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: fqdnBenchNS, Labels: map[string]string{"app": n}},
			Spec: corev1.PodSpec{
				NodeName: node, TerminationGracePeriodSeconds: ptr.To(int64(1)),
				Containers: []corev1.Container{{Name: "idle", Image: "busybox:1.36", Command: []string{"sleep", "3600"}}},
			},
		}
		if _, err := c.client.CoreV1().Pods(fqdnBenchNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create pod %s: %w", n, err)
		}
	}
	out := make([]*corev1.Pod, len(names))
	err := poll(ctx, 2*time.Minute, "client and direct Running with an IP", func() (bool, error) {
		if err := c.state.CheckProcesses(); err != nil {
			return false, err
		}
		for i, n := range names {
			p, err := c.client.CoreV1().Pods(fqdnBenchNS).Get(ctx, n, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return false, nil
			}
			out[i] = p
		}
		return true, nil
	})
	return out, err
}

// fqdnCoreDNS returns the address of a ready CoreDNS pod on node.
func fqdnCoreDNS(ctx context.Context, c *cluster, node string) (netip.Addr, error) {
	var ip netip.Addr
	err := poll(ctx, time.Minute, "a CoreDNS pod on "+node, func() (bool, error) {
		list, err := c.client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			return false, nil
		}
		for _, p := range list.Items {
			if p.Spec.NodeName == node && podReady(&p) {
				ip, err = netip.ParseAddr(p.Status.PodIP)
				return err == nil, nil
			}
		}
		return false, nil
	})
	return ip, err
}

// procCPU is a process's user and system CPU time.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process %d's CPU time: %w", pid, err)
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("process %d: short stat %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("process %d: stat %q", pid, s)
	}
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// metricSum adds the samples of url's metrics whose line starts with prefix.
func metricSum(url, prefix string) (float64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", l, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

type dnsResult struct {
	ip netip.Addr
	at time.Time // when the answer arrived
}

// dnsQuery asks server for name's A records from a new UDP socket in the
// network namespace nsPath and returns the round trip.
func dnsQuery(nsPath string, server netip.AddrPort, name string) (time.Duration, error) {
	start := time.Now()
	r, err := dnsAnswer(nsPath, server, name)
	if err != nil {
		return 0, err
	}
	return r.at.Sub(start), nil
}

func dnsAnswer(nsPath string, server netip.AddrPort, name string) (dnsResult, error) {
	id := uint16(time.Now().UnixNano())
	bld := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	_ = bld.StartQuestions()
	if err := bld.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return dnsResult{}, err
	}
	q, err := bld.Finish()
	if err != nil {
		return dnsResult{}, err
	}
	var res dnsResult
	err = netns.Do(nsPath, func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(q); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		res.at = time.Now()
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if m.Header.ID != id || m.Header.RCode != dnsmessage.RCodeSuccess {
			return fmt.Errorf("%s: answer id %d rcode %v", name, m.Header.ID, m.Header.RCode)
		}
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				res.ip = netip.AddrFrom4(r.A)
				return nil
			}
		}
		return fmt.Errorf("%s: no A record", name)
	})
	return res, err
}

// dialIn connects to addr from the network namespace nsPath.
func dialIn(nsPath string, addr netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := netns.Do(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", addr.String(), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return time.Since(start), err
}

package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/bench/summary"
	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// Targets of BenchmarkXDSHTTPRules.
const (
	xdsFullTarget   = 300 * time.Millisecond // publish of the whole node → ACK
	xdsChangeTarget = 50 * time.Millisecond  // one-rule change → ACK, p99
	xdsRSSTarget    = 100 << 20              // Envoy's RSS with the whole node
	xdsWaitLimit    = 60 * time.Second       // any single wait for Envoy
	xdsHTTPPerRule  = 10                     // HTTP rules per rule (peer set)
	xdsPeersPerRule = 4                      // /32 peers per rule
	xdsStatsFlush   = 100 * time.Millisecond // Envoy's stats flush interval
)

// xdsBenchShape is the node BenchmarkXDSHTTPRules loads: rules HTTP rules
// spread over ports redirected ingress pod ports (port 8080 of a distinct
// pod IP each), each port's rules also those of pods-1 more pods from the
// same policy (a Deployment's replicas: one filter chain for them all).
type xdsBenchShape struct {
	rules, ports, pods, changes int
}

func xdsBenchShapeFromEnv(b *testing.B) xdsBenchShape {
	b.Helper()
	env := func(name string, def int) int {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive integer", name, v)
		}
		return n
	}
	s := xdsBenchShape{
		rules:   env("MEMBRANE_BENCH_XDS_HTTP_RULES", 10000),
		ports:   env("MEMBRANE_BENCH_XDS_PORTS", 100),
		pods:    env("MEMBRANE_BENCH_XDS_PODS", 1),
		changes: env("MEMBRANE_BENCH_XDS_CHANGES", 20),
	}
	if s.ports > s.rules {
		b.Fatalf("MEMBRANE_BENCH_XDS_PORTS=%d: more ports than HTTP rules (%d)", s.ports, s.rules)
	}
	if s.ports*s.pods > 60000 {
		b.Fatalf("MEMBRANE_BENCH_XDS_PORTS=%d x MEMBRANE_BENCH_XDS_PODS=%d: at most 60000 pod IPs", s.ports, s.pods)
	}
	return s
}

// node is the benchmark's node: port i is pod 10.1.x.y:8080 (ingress) with
// its share of the HTTP rules, in rules of xdsHTTPPerRule HTTP rules, each
// from xdsPeersPerRule /32 peers (10.2.x.y). HTTP rule j of port i: a
// method (a literal or an alternation), path `/api/v1/svc<i>/res<j>/.*`,
// and for one in ten a required header (x-tenant: t<j>), for one in 25 a
// present Authorization header.
func (s xdsBenchShape) node(proxyPort uint16) translate.Node {
	methods := []string{"GET", "POST", "GET|HEAD", "PUT|PATCH", "DELETE"}
	n := translate.Node{ProxyPort: proxyPort}
	peer := 0
	for i := range s.ports {
		ip := 1 + i*s.pods
		p := translate.Port{
			Direction: translate.Ingress,
			Endpoint:  netip.AddrFrom4([4]byte{10, 1, byte(ip >> 8), byte(ip)}),
			Port:      8080,
			Origins:   []string{fmt.Sprintf("MembraneNetworkPolicy bench/svc%d", i)},
		}
		nHTTP := s.rules / s.ports
		if i < s.rules%s.ports {
			nHTTP++
		}
		for j := range nHTTP {
			if j%xdsHTTPPerRule == 0 {
				r := translate.Rule{}
				for range xdsPeersPerRule {
					peer++
					r.Peers = append(r.Peers, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(peer >> 8), byte(peer)}), 32))
				}
				p.Rules = append(p.Rules, r)
			}
			h := translate.HTTPRule{
				Method: methods[j%len(methods)],
				Path:   fmt.Sprintf("/api/v1/svc%d/res%d/.*", i, j),
			}
			if j%10 == 3 {
				h.Headers = append(h.Headers, translate.Header{Name: "x-tenant", Value: fmt.Sprintf("t%d", j)})
			}
			if j%25 == 7 {
				h.Headers = append(h.Headers, translate.Header{Name: "Authorization"})
			}
			r := &p.Rules[len(p.Rules)-1]
			r.HTTP = append(r.HTTP, h)
		}
		n.Ports = append(n.Ports, p)
		// The other pods of the policy share its rules (the same slices:
		// a change of one is a change of all).
		for k := 1; k < s.pods; k++ {
			q := p
			q.Endpoint = netip.AddrFrom4([4]byte{10, 1, byte((ip + k) >> 8), byte(ip + k)})
			n.Ports = append(n.Ports, q)
		}
	}
	return n
}

// BenchmarkXDSHTTPRules measures how fast the pinned Envoy takes a node's
// L7 configuration from the server, over incremental ADS: a node of
// MEMBRANE_BENCH_XDS_HTTP_RULES HTTP rules (10,000) over
// MEMBRANE_BENCH_XDS_PORTS pod ports (100), each port's policy selecting
// MEMBRANE_BENCH_XDS_PODS pods of the node (1), published whole to a connected
// Envoy that has nothing yet (translate + publish → ACK of every resource,
// target ≤ 300 ms; Envoy's RSS then, target ≤ 100 MB); then
// MEMBRANE_BENCH_XDS_CHANGES (20) changes of one HTTP rule's path, each to
// ACK (target p99 ≤ 50 ms), through the agent's path: one Translator, which
// rebuilds only the changed chain's route configuration. Beside the
// end-to-end times it reports Envoy's own: its LDS and RDS update
// durations and update counts. A NACK, a wait over 60 s, or a change that
// makes Envoy update its listener fails; a missed target does not.
func BenchmarkXDSHTTPRules(b *testing.B) {
	envoy := testenv.Tool(b, "envoy")
	testenv.RequireRoot(b, "the transparent listener needs CAP_NET_ADMIN")
	shape := xdsBenchShapeFromEnv(b)
	s, adsAddr := serveADS(b)
	adminPath := filepath.Join(b.TempDir(), "admin-address")
	// Histograms reach /stats when flushed: flush often.
	boot := bootstrapFile(b, adsAddr, fmt.Sprintf("stats_flush_interval: %gs", xdsStatsFlush.Seconds()))
	proc, stop := runEnvoy(b, envoy, boot, "--admin-address-path", adminPath)
	defer stop()
	waitStatus(b, s, "envoy connected", func(st Status) bool { return st.Connected })

	node := shape.node(freePort(b))
	tr := translate.NewTranslator()
	// apply translates n, publishes it and waits for Envoy's ACK.
	apply := func(n translate.Node) (translated, published, acked time.Duration) {
		b.Helper()
		start := time.Now()
		res, err := tr.Resources(n)
		if err != nil {
			b.Fatal(err)
		}
		translated = time.Since(start)
		v, err := s.Publish(context.Background(), res)
		if err != nil {
			b.Fatal(err)
		}
		published = time.Since(start)
		ctx, cancel := context.WithTimeout(context.Background(), xdsWaitLimit)
		defer cancel()
		if err := s.WaitAcked(ctx, v); err != nil {
			b.Fatal(err)
		}
		return translated, published, time.Since(start)
	}

	b.ResetTimer()
	fullTranslate, fullPublish, full := apply(node)
	b.StopTimer()
	rss := vmRSS(proc.Pid)
	chains := len(translate.RouteOrigins(node)) // a route configuration per chain
	time.Sleep(3 * xdsStatsFlush)
	afterFull := envoyStats(b, adminPath)

	// One HTTP rule of one port (the middle one) changes its path back
	// and forth: every publish is a real change.
	port, rule := &node.Ports[shape.ports/2*shape.pods], 0
	orig := port.Rules[rule].HTTP[0].Path
	var changes, changeTranslate, changePublish []time.Duration
	for k := range shape.changes {
		path := orig
		if k%2 == 0 {
			path = strings.Replace(orig, "/api/v1/", "/api/v2/", 1)
		}
		port.Rules[rule].HTTP[0].Path = path
		trans, pub, d := apply(node)
		changes, changeTranslate, changePublish = append(changes, d), append(changeTranslate, trans), append(changePublish, pub-trans)
	}
	time.Sleep(3 * xdsStatsFlush)
	afterChanges := envoyStats(b, adminPath)
	slices.Sort(changes)
	slices.Sort(changeTranslate)
	slices.Sort(changePublish)
	p50, p99, worst := nearestRank(changes, 0.50), nearestRank(changes, 0.99), changes[len(changes)-1]
	ldsUpdates := afterChanges.counter("listener_manager.lds.update_success") - afterFull.counter("listener_manager.lds.update_success")
	rdsUpdates := afterChanges.sumCounters(".rds.", ".update_success") - afterFull.sumCounters(".rds.", ".update_success")

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(0, "ns/op") // the run's wall time says nothing
	b.ReportMetric(ms(full), "ms-full-ack")
	b.ReportMetric(ms(fullTranslate), "ms-full-translate")
	b.ReportMetric(ms(p50), "ms-change-p50")
	b.ReportMetric(ms(p99), "ms-change-p99")
	b.ReportMetric(ms(worst), "ms-change-max")
	if rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "MB-envoy-rss")
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	rssVerdict := met(rss <= xdsRSSTarget)
	if rss <= 0 {
		rssVerdict = "not evaluated: RSS not readable"
	}
	b.Logf("xds %d HTTP rules (%d pod ports x %d HTTP rules, %d per peer set of %d /32s; %d pods per port's policy, %d filter chains), delta ADS: full publish -> ACK %.0f ms (translate %.0f ms, publish %.0f ms; target <= %s: %s); one-rule change -> ACK p50 %.1f ms p99 %.1f ms max %.1f ms over %d (translate p50 %.1f ms, publish p50 %.1f ms; target p99 <= %s: %s); envoy RSS %.0f MB (target <= %d MB: %s)",
		shape.rules, shape.ports, shape.rules/shape.ports, xdsHTTPPerRule, xdsPeersPerRule, shape.pods, chains,
		ms(full), ms(fullTranslate), ms(fullPublish-fullTranslate), xdsFullTarget, met(full <= xdsFullTarget),
		ms(p50), ms(p99), ms(worst), len(changes), ms(nearestRank(changeTranslate, 0.5)), ms(nearestRank(changePublish, 0.5)),
		xdsChangeTarget, met(p99 <= xdsChangeTarget),
		float64(rss)/(1<<20), xdsRSSTarget>>20, rssVerdict)
	rssRow := summary.Row{Figure: "Envoy RSS with the whole node", Value: float64(rss) / (1 << 20), Unit: "MB",
		Target: fmt.Sprintf("<= %d MB", xdsRSSTarget>>20), Met: summary.Check(rss <= xdsRSSTarget)}
	if rss <= 0 {
		rssRow.Met, rssRow.Note = summary.NotEvaluated, "RSS not readable"
	}
	summary.Record(b,
		summary.Row{Figure: fmt.Sprintf("%d HTTP rules, full publish -> ACK", shape.rules), Value: ms(full), Unit: "ms",
			Target: fmt.Sprintf("<= %d ms", xdsFullTarget.Milliseconds()), Met: summary.Check(full <= xdsFullTarget),
			Note: fmt.Sprintf("translate %.0f ms", ms(fullTranslate))},
		summary.Row{Figure: "one-rule change -> ACK p99", Value: ms(p99), Unit: "ms",
			Target: fmt.Sprintf("<= %d ms", xdsChangeTarget.Milliseconds()), Met: summary.Check(p99 <= xdsChangeTarget),
			Note: fmt.Sprintf("p50 %.1f ms, %d changes", ms(p50), len(changes))},
		rssRow)
	if len(changes) < 100 {
		b.Logf("  (p99 of %d samples, nearest rank: their maximum)", len(changes))
	}
	// Envoy's own view (histograms in ms).
	b.Logf("  envoy, full load: %s", afterFull.line("listener_manager.lds.update_duration"))
	b.Logf("  envoy, full load: %s", afterFull.line("cluster_manager.cds.update_duration"))
	if rc := afterFull.names(".rds.", ".update_duration"); len(rc) > 0 {
		var sum, worst float64
		for _, name := range rc {
			v := afterFull.p100(name)
			sum, worst = sum+v, max(worst, v)
		}
		b.Logf("  envoy, full load: %d route configurations (RDS): update_duration sum %.1f ms, max %.1f ms", len(rc), sum, worst)
	}
	b.Logf("  envoy, changes: %d LDS updates, %d RDS updates for %d changes", ldsUpdates, rdsUpdates, len(changes))
	// The changed route configuration's stats: http.<its chain's stat
	// prefix>.rds.<its name>.update_duration.
	var changed string
	for name := range translate.RouteOrigins(translate.Node{Ports: []translate.Port{*port}}) {
		changed = translate.StatPrefix(name) + ".rds."
	}
	for _, name := range afterChanges.names(changed, ".update_duration") {
		b.Logf("  envoy, changes (the changed route configuration, full load included): %s", afterChanges.line(name))
	}
	if ldsUpdates != 0 {
		b.Fatalf("%d one-rule changes made Envoy update its listener %d times: want 0", len(changes), ldsUpdates)
	}
	if rdsUpdates != int64(len(changes)) {
		b.Errorf("%d one-rule changes made Envoy update %d route configurations: want one each", len(changes), rdsUpdates)
	}
}

// stats are Envoy's /stats lines, by name.
type stats map[string]string

// envoyStats reads Envoy's /stats from the admin address Envoy wrote to
// adminPath.
func envoyStats(b *testing.B, adminPath string) stats {
	b.Helper()
	body, err := envoyAdmin(adminPath, "/stats")
	if err != nil {
		b.Fatal(err)
	}
	out := stats{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, v, ok := strings.Cut(line, ": "); ok {
			out[name] = v
		}
	}
	return out
}

func (s stats) line(name string) string {
	v, ok := s[name]
	if !ok {
		return name + ": (none)"
	}
	return name + ": " + v
}

// p100 is the cumulative maximum of a histogram ("P100(interval,cumulative)"),
// 0 when it has none.
func (s stats) p100(name string) float64 {
	_, v, _ := strings.Cut(s[name], "P100(")
	_, v, _ = strings.Cut(v, ",")
	v, _, _ = strings.Cut(v, ")")
	f, _ := strconv.ParseFloat(v, 64)
	return f
}

func (s stats) counter(name string) int64 {
	n, _ := strconv.ParseInt(s[name], 10, 64)
	return n
}

// names are the stat names that contain infix and end in suffix, sorted.
func (s stats) names(infix, suffix string) []string {
	var out []string
	for name := range s {
		if strings.Contains(name, infix) && strings.HasSuffix(name, suffix) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (s stats) sumCounters(infix, suffix string) int64 {
	var sum int64
	for _, name := range s.names(infix, suffix) {
		sum += s.counter(name)
	}
	return sum
}

// envoyAdmin GETs path from Envoy's admin, whose address Envoy wrote to
// adminPath.
func envoyAdmin(adminPath, path string) ([]byte, error) {
	addr, err := os.ReadFile(adminPath)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+strings.TrimSpace(string(addr))+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("envoy %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// nearestRank is the q quantile of sorted ds (nearest rank).
func nearestRank(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(float64(len(ds))*q)) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// vmRSS is the resident set size of process pid in bytes (0 when unknown).
func vmRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

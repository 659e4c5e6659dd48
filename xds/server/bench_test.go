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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// Targets of BenchmarkXDSRoutes.
const (
	xdsFullTarget   = time.Second           // publish of the whole node → ACK
	xdsChangeTarget = 50 * time.Millisecond // one-route change → ACK, p99
	xdsWaitLimit    = 60 * time.Second      // any single wait for Envoy
	xdsHTTPPerRule  = 10                    // HTTP rules per rule (peer set)
	xdsPeersPerRule = 4                     // /32 peers per rule
)

// xdsBenchShape is the node BenchmarkXDSRoutes loads: routes HTTP rules
// spread over ports redirected ingress pod ports (each a distinct pod IP,
// port 8080).
type xdsBenchShape struct {
	routes, ports, changes int
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
		routes:  env("MEMBRANE_BENCH_XDS_ROUTES", 10000),
		ports:   env("MEMBRANE_BENCH_XDS_PORTS", 100),
		changes: env("MEMBRANE_BENCH_XDS_CHANGES", 20),
	}
	if s.ports > s.routes {
		b.Fatalf("MEMBRANE_BENCH_XDS_PORTS=%d: more ports than routes (%d)", s.ports, s.routes)
	}
	if s.ports > 60000 {
		b.Fatalf("MEMBRANE_BENCH_XDS_PORTS=%d: at most 60000 pod IPs", s.ports)
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
		ip := 1 + i
		p := translate.Port{
			Direction: translate.Ingress,
			Endpoint:  netip.AddrFrom4([4]byte{10, 1, byte(ip >> 8), byte(ip)}),
			Port:      8080,
		}
		nHTTP := s.routes / s.ports
		if i < s.routes%s.ports {
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
	}
	return n
}

// BenchmarkXDSRoutes measures how fast the pinned Envoy takes a node's L7
// configuration from the server: a node of MEMBRANE_BENCH_XDS_ROUTES HTTP
// rules (10,000) over MEMBRANE_BENCH_XDS_PORTS pod ports (100), published
// whole to a connected Envoy that has nothing yet (translate + publish →
// ACK of every type, target ≤ 1 s); then MEMBRANE_BENCH_XDS_CHANGES (20)
// changes of one rule's path, each to ACK (target p99 ≤ 50 ms). A NACK or
// a wait over 60 s fails; a missed target does not.
func BenchmarkXDSRoutes(b *testing.B) {
	envoy := testenv.Tool(b, "envoy")
	testenv.RequireRoot(b, "the transparent listener needs CAP_NET_ADMIN")
	shape := xdsBenchShapeFromEnv(b)
	s, adsAddr := serveADS(b)
	adminPath := filepath.Join(b.TempDir(), "admin-address")
	proc, stop := runEnvoy(b, envoy, bootstrapFile(b, adsAddr), "--admin-address-path", adminPath)
	defer stop()
	waitStatus(b, s, "envoy connected", func(st Status) bool { return st.Connected })

	node := shape.node(freePort(b))
	// apply translates n, publishes it and waits for Envoy's ACK.
	apply := func(n translate.Node) (translated, published, acked time.Duration) {
		b.Helper()
		start := time.Now()
		res, err := n.Resources()
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

	// One rule of one port (the middle one) changes its path back and
	// forth: every publish is a real change.
	port, rule := &node.Ports[shape.ports/2], 0
	orig := port.Rules[rule].HTTP[0].Path
	var changes, changeTranslate []time.Duration
	for k := range shape.changes {
		path := orig
		if k%2 == 0 {
			path = strings.Replace(orig, "/api/v1/", "/api/v2/", 1)
		}
		port.Rules[rule].HTTP[0].Path = path
		tr, _, d := apply(node)
		changes, changeTranslate = append(changes, d), append(changeTranslate, tr)
	}
	slices.Sort(changes)
	slices.Sort(changeTranslate)
	p50, p99, worst := nearestRank(changes, 0.50), nearestRank(changes, 0.99), changes[len(changes)-1]

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
	b.Logf("xds %d routes (%d pod ports x %d HTTP rules, %d per peer set of %d /32s): full publish -> ACK %.0f ms (translate %.0f ms, publish %.0f ms; target <= %s: %s); one-route change -> ACK p50 %.1f ms p99 %.1f ms max %.1f ms over %d (translate p50 %.1f ms; target p99 <= %s: %s); envoy RSS %.0f MB",
		shape.routes, shape.ports, shape.routes/shape.ports, xdsHTTPPerRule, xdsPeersPerRule,
		ms(full), ms(fullTranslate), ms(fullPublish-fullTranslate), xdsFullTarget, met(full <= xdsFullTarget),
		ms(p50), ms(p99), ms(worst), len(changes), ms(nearestRank(changeTranslate, 0.5)), xdsChangeTarget, met(p99 <= xdsChangeTarget),
		float64(rss)/(1<<20))
	if len(changes) < 100 {
		b.Logf("  (p99 of %d samples, nearest rank: their maximum)", len(changes))
	}
	// Envoy's own time per LDS update (ms; the full load and every change).
	if d, err := envoyStat(adminPath, "listener_manager.lds.update_duration"); err == nil {
		b.Logf("  envoy %s", d)
	} else {
		b.Logf("  envoy's LDS update duration: %v", err)
	}
}

// envoyStat is the line of Envoy's /stats for the stat name, read from the
// admin address Envoy wrote to adminPath.
func envoyStat(adminPath, name string) (string, error) {
	addr, err := os.ReadFile(adminPath)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+strings.TrimSpace(string(addr))+"/stats?filter=^"+regexp.QuoteMeta(name)+"$", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("envoy /stats: %s: %s", resp.Status, body)
	}
	line := strings.TrimSpace(string(body))
	if line == "" {
		return "", fmt.Errorf("envoy has no stat %s", name)
	}
	return line, nil
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

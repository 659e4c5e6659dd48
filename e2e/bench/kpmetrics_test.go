package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// kubeProxyMetrics reads kube-proxy's metrics on node n: series (name with
// labels, as printed) to value.
func kubeProxyMetrics(ctx context.Context, n localcluster.NodeState) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return scrapeMetrics(ctx, http.DefaultClient, "http://"+n.IP+":10249/metrics", "kube-proxy metrics on "+n.Name)
}

// scrapeMetrics reads a Prometheus text exposition: series (name with
// labels, as printed) to value. what names the source in errors.
func scrapeMetrics(ctx context.Context, hc *http.Client, url, what string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// The IPv4 series the bench reads.
const (
	mSyncSum    = `kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"}`
	mSyncCount  = `kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}`
	mLastSync   = `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}`
	mLastQueued = `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"}`
)

// syncStats reads kube-proxy's IPv4 sync-duration histogram (sum in
// seconds, count) on node n.
func syncStats(ctx context.Context, n localcluster.NodeState) (sum, count float64, err error) {
	m, err := kubeProxyMetrics(ctx, n)
	if err != nil {
		return 0, 0, err
	}
	sum, ok1 := m[mSyncSum]
	count, ok2 := m[mSyncCount]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("kube-proxy metrics on %s: no kubeproxy_sync_proxy_rules_duration_seconds", n.Name)
	}
	return sum, count, nil
}

func unixTime(v float64) time.Time {
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// cgroupUsage is the CPU time used in the cgroup v2 dir so far.
func cgroupUsage(dir string) (time.Duration, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("read cpu.stat: %w", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu.stat usage_usec %q: %w", v, err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, errors.New("cpu.stat has no usage_usec")
}

// waitKubeProxyIdle waits until kube-proxy on every node has synced what it
// queued since `since` (the EndpointSlice of the next timed service), is not
// syncing (its cgroup, iptables-restore or nft included, uses under 10% of a
// CPU) and its last sync ended over its min-sync-period (1s) ago: then the
// Service's own sync starts as soon as kube-proxy sees it.
func (c *cluster) waitKubeProxyIdle(ctx context.Context, since time.Time) error {
	const interval = 250 * time.Millisecond
	prev := map[string]time.Duration{}
	return pollEvery(ctx, interval, 3*time.Minute, "kube-proxy idle after the EndpointSlice", func() (bool, error) {
		idle := true
		for _, n := range c.state.Nodes {
			usage, err := cgroupUsage(filepath.Join(c.nodeCgroup(n), "kube-proxy"))
			if err != nil {
				return false, err
			}
			p, seen := prev[n.Name]
			prev[n.Name] = usage
			m, err := kubeProxyMetrics(ctx, n)
			if err != nil {
				return false, nil
			}
			queued, last := unixTime(m[mLastQueued]), unixTime(m[mLastSync])
			if !seen || usage-p > interval/10 || queued.Before(since) || last.Before(queued) || time.Since(last) < 1200*time.Millisecond {
				idle = false
			}
		}
		return idle, nil
	})
}

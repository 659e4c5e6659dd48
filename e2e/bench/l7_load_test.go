package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

// l7Client is an HTTP client whose connections are made in the network
// namespace at nsPath.
func l7Client(nsPath string, keepAlive bool) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(nsPath, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{
		Timeout: l7ReqTimeout,
		Transport: &http.Transport{
			DialContext: dial, DisableKeepAlives: !keepAlive, DisableCompression: true,
			MaxIdleConnsPerHost: l7Pool, MaxConnsPerHost: l7Pool, IdleConnTimeout: 10 * time.Minute,
		},
	}
}

// l7Arm is one way from the client to an echo-basic pod, and what was
// measured on it.
type l7Arm struct {
	name       string
	ns         string // the client pod's network namespace
	base       string // scheme, address and port
	deleteCode int    // what a DELETE must get
	hc         *http.Client
	// cpu is the proxies' CPU time so far; nil: no proxy (or cpuParts).
	cpu func() (time.Duration, error)
	// cpuParts, instead of cpu: the CPU time so far of each cgroup the
	// arm's mesh runs in.
	cpuParts func() ([]time.Duration, error)
	// watch, when set, is a CPU time measured during the arm's requests
	// for reference only (node 2's agent during every arm: its baseline).
	watch func() (time.Duration, error)
	// watchEnvoy, when set, is node 2's Envoy's CPU time, measured the
	// same way: its background in the arms that do not use it.
	watchEnvoy func() (time.Duration, error)
	// rbacNS and rbacAdmin reach the admin of the Envoy enforcing the
	// rules: its RBAC filter's allowed counter.
	rbacNS, rbacAdmin     string
	rbacBefore, rbacDelta float64

	lat          []time.Duration     // measured requests
	cpuUsed      time.Duration       // during the measured requests
	partsUsed    []time.Duration     // by cpuParts's cgroup, during the measured requests
	softirq      time.Duration       // the machine's, during the measured requests
	watched      time.Duration       // watch\'s, during the measured requests
	envoyWatched time.Duration       // watchEnvoy's, during the measured requests
	bpf          map[string]progStat // node 2's BPF programs during the measured requests (l7Bench.probe)
	ok           int                 // 200s, warm-up included
	spent        time.Duration       // against l7ArmBudget
	truncated    bool
}

func (a *l7Arm) do(ctx context.Context, method string) (time.Duration, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+l7Path, nil)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(t0), resp.StatusCode, err
}

func (a *l7Arm) expect(ctx context.Context, method string, want int) error {
	_, code, err := a.do(ctx, method)
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", a.name, method, l7Path, err)
	}
	if code != want {
		return fmt.Errorf("%s: %s %s: got %d, want %d", a.name, method, l7Path, code, want)
	}
	return nil
}

// waitArm waits (2 minutes at most) until the arm answers GET with 200
// and DELETE with its code, on connections made for each request.
func (l *l7Bench) waitArm(ctx context.Context, a *l7Arm) error {
	probe := &l7Arm{name: a.name, base: a.base, hc: l7Client(l.netns(l.client), false)}
	last := ""
	err := poll(ctx, 2*time.Minute, a.name+": GET 200 and DELETE "+strconv.Itoa(a.deleteCode), func() (bool, error) {
		if err := l.c.state.CheckProcesses(); err != nil {
			return false, err
		}
		for _, s := range l.sidecars {
			if err := s.check(); err != nil {
				return false, err
			}
		}
		for _, m := range []struct {
			method string
			want   int
		}{{http.MethodGet, http.StatusOK}, {http.MethodDelete, a.deleteCode}} {
			if err := probe.expect(ctx, m.method, m.want); err != nil {
				last = err.Error()
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %s)", err, last)
	}
	return nil
}

// run sends n GETs at l7Rate, at most l7Pool at a time, within what is
// left of the arm's budget; measured, it records their latencies and the
// proxies' CPU time. Any error or status but 200 fails it.
func (l *l7Bench) run(ctx context.Context, a *l7Arm, n int, measured bool) ([]time.Duration, error) {
	interval := time.Second / l7Rate
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		lat      = make([]time.Duration, 0, n)
		firstErr error
	)
	sem := make(chan struct{}, l7Pool)
	var (
		cpu0         []time.Duration
		irq0, watch0 time.Duration
		envoy0       time.Duration
	)
	if measured {
		var err error
		if cpu0, err = a.cpuNow(); err != nil {
			return nil, err
		}
		if irq0, err = softirqTime(); err != nil {
			return nil, err
		}
		if a.watch != nil {
			if watch0, err = a.watch(); err != nil {
				return nil, err
			}
		}
		if a.watchEnvoy != nil {
			if envoy0, err = a.watchEnvoy(); err != nil {
				return nil, err
			}
		}
	}
	start := time.Now()
	budget := l7ArmBudget - a.spent
	for i := 0; i < n; i++ {
		next := start.Add(time.Duration(i) * interval)
		if next.Sub(start) >= budget {
			a.truncated = true
			break
		}
		var stopped error
		select {
		case <-ctx.Done():
			stopped = ctx.Err()
		case <-time.After(time.Until(next)):
			select {
			case <-ctx.Done():
				stopped = ctx.Err()
			case sem <- struct{}{}:
			}
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = stopped
		}
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			if stopped == nil {
				<-sem
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, code, err := a.do(ctx, http.MethodGet)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("GET %s: status %d, want 200", l7Path, code)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			lat = append(lat, d)
		}()
	}
	wg.Wait()
	a.spent += time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	a.ok += len(lat)
	if measured {
		cpu1, err := a.cpuNow()
		if err != nil {
			return nil, err
		}
		if a.partsUsed == nil && a.cpuParts != nil {
			a.partsUsed = make([]time.Duration, len(cpu1))
		}
		for i := range cpu1 {
			a.cpuUsed += cpu1[i] - cpu0[i]
			if a.cpuParts != nil {
				a.partsUsed[i] += cpu1[i] - cpu0[i]
			}
		}
		irq1, err := softirqTime()
		if err != nil {
			return nil, err
		}
		a.softirq += irq1 - irq0
		if a.watch != nil {
			w1, err := a.watch()
			if err != nil {
				return nil, err
			}
			a.watched += w1 - watch0
		}
		if a.watchEnvoy != nil {
			e1, err := a.watchEnvoy()
			if err != nil {
				return nil, err
			}
			a.envoyWatched += e1 - envoy0
		}
		a.lat = append(a.lat, lat...)
	}
	return lat, nil
}

// cpuNow is the arm's CPU time so far: cpuParts's, or cpu's as one part;
// none without a proxy.
func (a *l7Arm) cpuNow() ([]time.Duration, error) {
	if a.cpuParts != nil {
		return a.cpuParts()
	}
	if a.cpu == nil {
		return nil, nil
	}
	d, err := a.cpu()
	if err != nil {
		return nil, err
	}
	return []time.Duration{d}, nil
}

func (a *l7Arm) stats() l7Stats {
	ds := slices.Clone(a.lat)
	slices.Sort(ds)
	s := l7Stats{n: len(ds), cpuPer1k: math.NaN()}
	if len(ds) > 0 {
		s.p50, s.p90, s.p99, s.max = percentile(ds, 0.5), percentile(ds, 0.9), percentile(ds, 0.99), ds[len(ds)-1]
		per1k := func(d time.Duration) float64 { return d.Seconds() / float64(len(ds)) * 1000 }
		if a.cpu != nil || a.cpuParts != nil {
			s.cpuPer1k = per1k(a.cpuUsed)
		}
		for _, d := range a.partsUsed {
			s.cgroupPer1k = append(s.cgroupPer1k, per1k(d))
		}
		s.softirqPer1k = per1k(a.softirq)
		s.watchedPer1k = per1k(a.watched)
		s.envoyWatchedPer1k = per1k(a.envoyWatched)
	}
	return s
}

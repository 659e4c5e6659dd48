package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// BenchmarkGatewayRoutes measures the Gateway API at 1,000 HTTPRoutes on
// one Gateway (gatewayAPI.enabled): the time from 0 to all 1,000 routes
// serving; then, one change at a time, the time from the API write of one
// more HTTPRoute (a new path) to its first 200 through the Gateway's
// address from the host's root namespace (before it: 404), p50/p99 against
// the 1 s target; requests/s through the Gateway vs straight to the backend
// pod (same client in the root namespace, same concurrency, arms taking
// turns); and the CPU seconds and RSS of the operator, the agents and the
// node Envoys.
//
//	MEMBRANE_BENCH_GW_ROUTES=1000    HTTPRoutes before the changes
//	MEMBRANE_BENCH_GW_CHANGES=50     measured changes
func BenchmarkGatewayRoutes(b *testing.B) {
	e := benchEnv(b, "Gateway API")
	routes := envInt(b, "MEMBRANE_BENCH_GW_ROUTES", 1000, 1)
	changes := envInt(b, "MEMBRANE_BENCH_GW_CHANGES", 50, 1)
	ctx := benchContext(b)
	begin := time.Now()
	rep := &gwReport{routes: routes, loadBefore: strings.TrimSpace(wgLoadAvg()), concurrency: gwConcurrency,
		armDuration: gwArmDuration, rounds: gwRounds}

	c := upClusterWith(ctx, b, e, localcluster.Options{
		Name: gwBenchCluster, PodCIDR: gwBenchPodCIDR, HelmSet: []string{"gatewayAPI.enabled=true"},
	})
	defer c.down()
	g := &gwBench{b: b, c: c}
	if err := g.setup(ctx); err != nil {
		b.Fatal(err)
	}
	if err := g.findProcesses(ctx); err != nil {
		b.Fatal(err)
	}
	rep.leader = g.leader
	rep.mem0 = g.rss()
	cpu0 := g.cpu()

	// 0 -> routes.
	if err := g.grow(ctx, routes, rep); err != nil {
		b.Fatal(err)
	}
	cpu1 := g.cpu()
	rep.cpuGrow = cpuDelta(cpu0, cpu1)
	rep.memN = g.rss()

	// One more route at a time.
	changeStart := time.Now()
	for i := range changes {
		if time.Since(changeStart) > gwChangeBudget {
			rep.truncated = true
			break
		}
		s, err := g.change(ctx, i)
		if err != nil {
			b.Fatalf("change %d: %v", i+1, err)
		}
		rep.samples = append(rep.samples, s)
		if os.Getenv("GWDUMP") != "" {
			progress(b, "change %d created at %s", i, time.Now().Add(-s.status).UTC().Format("15:04:05.000"))
		}
		if (i+1)%10 == 0 {
			progress(b, "change %d/%d: serving after %s, status after %s", i+1, changes, ms(s.serving), ms(s.status))
		}
		if err := c.state.CheckProcesses(); err != nil {
			b.Fatal(err)
		}
	}
	cpu2 := g.cpu()
	rep.cpuChanges = cpuDelta(cpu1, cpu2)
	rep.memChanged = g.rss()
	rep.envoyStats = g.envoyStats(ctx)

	// Requests/s through the Gateway and straight to the pod.
	arms, err := g.throughput(ctx)
	if err != nil {
		b.Fatal(err)
	}
	rep.arms = arms
	rep.cpuLoad = cpuDelta(cpu2, g.cpu())
	rep.cpuAll = cpuDelta(cpu0, g.cpu())
	rep.loadAfter = strings.TrimSpace(wgLoadAvg())
	rep.operatorErrors, rep.operatorFirstError = g.operatorErrors(ctx)
	rep.took = time.Since(begin)
	fmt.Print(rep.String())
	rep.metrics(b)
	recordSummary(b, rep.summary()...)
}

const (
	gwBenchCluster = "bench-gw"
	gwBenchPodCIDR = "10.235.0.0/16"
	gwNS           = "bench-gw"
	gwEchoPort     = 3000
	gwServicePort  = 8080
	// gwChangeTimeout bounds one change; gwChangeBudget all of them.
	gwChangeTimeout = 30 * time.Second
	gwChangeBudget  = 6 * time.Minute
	// gwSettle lets the previous change's translation and status writes end
	// before the next change (the agents debounce by 200 ms).
	gwSettle = 500 * time.Millisecond
	// Throughput: keep-alive GETs from gwConcurrency workers in the root
	// namespace, gwRounds turns of gwArmDuration per arm.
	gwConcurrency = 8
	gwArmDuration = 3 * time.Second
	gwWarmup      = time.Second
	gwRounds      = 3
	gwTarget      = time.Second
)

type gwBench struct {
	b      *testing.B
	c      *cluster
	cl     client.Client
	fresh  *http.Client // a new connection per request
	base   string       // http://<gateway address>
	addr   netip.Addr
	podIP  netip.Addr // the echo pod
	leader string     // the operator pod holding the Lease
	procs  []gwProc
}

// gwProc is one measured process: its pod's cgroup for CPU, its PID for
// RSS.
type gwProc struct {
	role   string // operator, agent, envoy
	node   string
	cgroup string
	pid    int
}

func (g *gwBench) setup(ctx context.Context) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := gwv1.Install(scheme); err != nil {
		return err
	}
	cl, err := client.New(g.c.cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("gateway client: %w", err)
	}
	g.cl = cl
	start := time.Now()
	backend := g.c.state.Nodes[1]
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: gwNS}},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: gwNS, Labels: map[string]string{"app": "echo"}},
			Spec: corev1.PodSpec{
				NodeName:                      backend.Name,
				TerminationGracePeriodSeconds: ptr.To(int64(0)),
				Containers: []corev1.Container{{
					Name: "echo", Image: "gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: gwEchoPort}},
					Env: []corev1.EnvVar{
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
						PeriodSeconds: 1,
					},
				}},
			},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: gwNS},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "echo"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: gwServicePort, TargetPort: intstr.FromInt32(gwEchoPort)}},
			},
		},
		&gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: gwNS},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: "membrane",
				Listeners:        []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80}},
			},
		},
	}
	err = poll(ctx, 2*time.Minute, "the Gateway API CRDs served", func() (bool, error) {
		var l gwv1.GatewayClassList
		return g.cl.List(ctx, &l) == nil, nil
	})
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := g.cl.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	err = poll(ctx, 2*time.Minute, "the echo pod Ready and the Gateway Programmed with an address", func() (bool, error) {
		if err := g.c.state.CheckProcesses(); err != nil {
			return false, err
		}
		var p corev1.Pod
		if err := g.cl.Get(ctx, client.ObjectKey{Namespace: gwNS, Name: "echo"}, &p); err != nil || !podReady(&p) {
			return false, nil
		}
		var gw gwv1.Gateway
		if err := g.cl.Get(ctx, client.ObjectKey{Namespace: gwNS, Name: "web"}, &gw); err != nil {
			return false, nil
		}
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") || len(gw.Status.Addresses) == 0 {
			return false, nil
		}
		var err error
		if g.podIP, err = netip.ParseAddr(p.Status.PodIP); err != nil {
			return false, fmt.Errorf("echo pod IP %q: %w", p.Status.PodIP, err)
		}
		if g.addr, err = netip.ParseAddr(gw.Status.Addresses[0].Value); err != nil {
			return false, fmt.Errorf("gateway address %q: %w", gw.Status.Addresses[0].Value, err)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	g.base = "http://" + g.addr.String()
	g.fresh = gwClient()
	g.fresh.Transport.(*http.Transport).DisableKeepAlives = true
	// The Gateway serves: an unknown path gets the listener's 404.
	err = poll(ctx, time.Minute, "GET "+g.base+"/route-0 -> 404", func() (bool, error) {
		code, err := g.get(ctx, g.fresh, g.base+"/route-0")
		return err == nil && code == http.StatusNotFound, nil
	})
	if err != nil {
		return err
	}
	// The direct arm: the root namespace reaches the echo pod through its
	// node (a host route for the pod's address alone, gone with the
	// cluster's bridge).
	if err := g.routePod(backend); err != nil {
		return err
	}
	err = poll(ctx, 30*time.Second, "GET the echo pod straight", func() (bool, error) {
		code, err := g.get(ctx, g.fresh, g.direct()+"/route-0")
		return err == nil && code == http.StatusOK, nil
	})
	if err != nil {
		return err
	}
	progress(g.b, "echo pod %s on %s, Gateway web at %s (serving its 404), in %s", g.podIP, backend.Name, g.addr, time.Since(start).Round(time.Millisecond))
	return nil
}

func (g *gwBench) direct() string { return fmt.Sprintf("http://%s:%d", g.podIP, gwEchoPort) }

// routePod routes the echo pod's address from the root namespace through
// the underlay address of its node, and removes the route in cleanup.
func (g *gwBench) routePod(node localcluster.NodeState) error {
	gw := net.ParseIP(node.IP)
	if gw == nil {
		return fmt.Errorf("node %s: IP %q", node.Name, node.IP)
	}
	r := &netlink.Route{Dst: &net.IPNet{IP: net.IP(g.podIP.AsSlice()), Mask: net.CIDRMask(32, 32)}, Gw: gw}
	if err := netlink.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s via %s: %w", g.podIP, gw, err)
	}
	g.b.Cleanup(func() {
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such process") {
			g.b.Logf("remove route %s via %s: %v", g.podIP, gw, err)
		}
	})
	return nil
}

// gwClient makes keep-alive connections from the root namespace, no proxy.
func gwClient() *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			Proxy: nil, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, DisableCompression: true,
			MaxIdleConnsPerHost: gwConcurrency, MaxConnsPerHost: gwConcurrency, IdleConnTimeout: time.Minute,
		},
	}
}

func (g *gwBench) get(ctx context.Context, hc *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

func gwRoute(name, path string) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: gwNS},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "web"}}},
			Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchExact), Value: ptr.To(path)}}},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
					Name: "echo", Port: ptr.To(gwv1.PortNumber(gwServicePort)),
				}}}},
			}},
		},
	}
}

// accepted tells whether the operator wrote the route's status for its
// generation: Accepted=True from membrane's controller.
func accepted(rt *gwv1.HTTPRoute) bool {
	for _, p := range rt.Status.Parents {
		if p.ControllerName != "membrane.io/gateway-controller" {
			continue
		}
		c := meta.FindStatusCondition(p.Conditions, "Accepted")
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == rt.Generation
	}
	return false
}

// grow creates n routes (/route-0 .. /route-(n-1)) with 16 writers and
// waits until each one serves and has its status, and the Gateway's
// listener counts them.
func (g *gwBench) grow(ctx context.Context, n int, rep *gwReport) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := g.cl.Create(ctx, gwRoute("route-"+strconv.Itoa(i), "/route-"+strconv.Itoa(i))); err != nil {
					select {
					case errs <- fmt.Errorf("create route-%d: %w", i, err):
					default:
					}
					cancel()
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	rep.created = time.Since(start)
	progress(g.b, "created %d HTTPRoutes in %s", n, rep.created.Round(time.Millisecond))

	// Serving: sweep the routes not yet serving until none is left.
	pending := make([]int, n)
	for i := range pending {
		pending[i] = i
	}
	var served, statused time.Duration
	statusDone := false
	for len(pending) > 0 || !statusDone {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d routes not serving, statuses written: %v: %w", len(pending), statusDone, err)
		}
		if len(pending) > 0 {
			pending = g.sweep(ctx, pending)
			if len(pending) == 0 {
				served = time.Since(start)
				progress(g.b, "all %d routes serving %s after the first create", n, served.Round(time.Millisecond))
			}
		}
		if !statusDone {
			var l gwv1.HTTPRouteList
			if err := g.cl.List(ctx, &l, client.InNamespace(gwNS)); err == nil {
				done := 0
				for i := range l.Items {
					if accepted(&l.Items[i]) {
						done++
					}
				}
				var gw gwv1.Gateway
				if done == n && g.cl.Get(ctx, client.ObjectKey{Namespace: gwNS, Name: "web"}, &gw) == nil &&
					len(gw.Status.Listeners) == 1 && gw.Status.Listeners[0].AttachedRoutes == int32(n) {
					statusDone, statused = true, time.Since(start)
					progress(g.b, "all %d routes Accepted and counted by the listener %s after the first create", n, statused.Round(time.Millisecond))
				}
			}
		}
		if len(pending) > 0 || !statusDone {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	rep.allServing, rep.allStatus = served, statused
	return nil
}

// sweep GETs each pending route once (8 at a time, a new connection each)
// and returns those still not serving.
func (g *gwBench) sweep(ctx context.Context, pending []int) []int {
	var (
		mu   sync.Mutex
		left []int
		wg   sync.WaitGroup
	)
	jobs := make(chan int)
	for range gwConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				code, err := g.get(ctx, g.fresh, g.base+"/route-"+strconv.Itoa(i))
				if err != nil || code != http.StatusOK {
					mu.Lock()
					left = append(left, i)
					mu.Unlock()
				}
			}
		}()
	}
	for _, i := range pending {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	slices.Sort(left)
	return left
}

type gwSample struct {
	serving time.Duration // API write -> first 200 on a new connection
	status  time.Duration // API write -> Accepted in the route's status
	// keepAlive: API write -> first 200 on a connection opened before the
	// write; 0: none within gwKeepAliveWait after serving.
	keepAlive time.Duration
	errors    int // requests that failed (not a 404) meanwhile
}

// gwKeepAliveWait is how long after a change serves on new connections an
// older keep-alive connection is watched for it.
const gwKeepAliveWait = 3 * time.Second

// change adds one route and times it: from just before the create call to
// the first 200 on its path (a new connection per request, as a new
// client), then to its status; and to the first 200 on a keep-alive
// connection opened before the write.
func (g *gwBench) change(ctx context.Context, i int) (gwSample, error) {
	select {
	case <-ctx.Done():
		return gwSample{}, ctx.Err()
	case <-time.After(gwSettle):
	}
	name, path := "change-"+strconv.Itoa(i), "/change-"+strconv.Itoa(i)
	url := g.base + path
	kept := gwClient()
	kept.Transport.(*http.Transport).MaxConnsPerHost = 1
	defer kept.CloseIdleConnections()
	if code, err := g.get(ctx, kept, url); err != nil || code != http.StatusNotFound {
		return gwSample{}, fmt.Errorf("GET %s before its route: %d, %v; want 404", path, code, err)
	}
	var s gwSample
	start := time.Now()
	if err := g.cl.Create(ctx, gwRoute(name, path)); err != nil {
		return s, fmt.Errorf("create %s: %w", name, err)
	}
	deadline := start.Add(gwChangeTimeout)
	var lastStatus time.Time
	for s.serving == 0 || s.status == 0 || (s.keepAlive == 0 && time.Since(start) < s.serving+gwKeepAliveWait) {
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%s: %s after its create: serving after %s, status after %s", name, gwChangeTimeout, s.serving, s.status)
		}
		if s.serving == 0 {
			code, err := g.get(ctx, g.fresh, url)
			if err == nil && code == http.StatusOK {
				s.serving = time.Since(start)
			} else if err != nil || code != http.StatusNotFound {
				s.errors++
			}
		}
		if s.keepAlive == 0 {
			if code, err := g.get(ctx, kept, url); err == nil && code == http.StatusOK {
				s.keepAlive = time.Since(start)
			}
		}
		if s.status == 0 && time.Since(lastStatus) >= 10*time.Millisecond {
			lastStatus = time.Now()
			var rt gwv1.HTTPRoute
			if err := g.cl.Get(ctx, client.ObjectKey{Namespace: gwNS, Name: name}, &rt); err == nil && accepted(&rt) {
				s.status = time.Since(start)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return s, nil
}

// findProcesses finds the operator leader, the agents and the node Envoys.
func (g *gwBench) findProcesses(ctx context.Context) error {
	var holder string
	err := poll(ctx, time.Minute, "the operator's Lease held", func() (bool, error) {
		l, err := g.c.client.CoordinationV1().Leases("kube-system").Get(ctx, "membrane-operator", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return false, nil
		}
		holder = *l.Spec.HolderIdentity
		return true, nil
	})
	if err != nil {
		return err
	}
	cgroups := g.c.state.Layout().CgroupDir(g.c.state.CgroupRoot)
	for _, k := range []struct{ role, label, comm string }{
		{"operator", "k8s-app=membrane-operator", "membrane-operat"},
		{"agent", "k8s-app=membrane-agent", "membrane-agent"},
		{"envoy", "k8s-app=membrane-envoy", "envoy"},
	} {
		pods, err := g.c.client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: k.label})
		if err != nil {
			return fmt.Errorf("list %s pods: %w", k.role, err)
		}
		for _, p := range pods.Items {
			if k.role == "operator" {
				// The standby waits for the Lease: only the leader works.
				// The holder is "<pod name>_<uuid>".
				if !strings.HasPrefix(holder, p.Name+"_") {
					continue
				}
				g.leader = p.Name
			}
			dir := filepath.Join(cgroups, p.Spec.NodeName, "pods", string(p.UID))
			pids, err := procsIn(dir, k.comm)
			if err != nil {
				return fmt.Errorf("%s pod %s: %w", k.role, p.Name, err)
			}
			if len(pids) != 1 {
				return fmt.Errorf("%s pod %s: %d %s processes, want 1", k.role, p.Name, len(pids), k.comm)
			}
			g.procs = append(g.procs, gwProc{role: k.role, node: p.Spec.NodeName, cgroup: dir, pid: pids[0]})
		}
	}
	if g.leader == "" {
		return fmt.Errorf("no operator pod is the Lease holder %q", holder)
	}
	slices.SortFunc(g.procs, func(a, b gwProc) int { return strings.Compare(a.role+a.node, b.role+b.node) })
	return nil
}

// envoyStats reads each node Envoy's listener manager counters: how many
// listeners drain (each replaced listener keeps its connections until they
// drain) and how many listener updates it took.
func (g *gwBench) envoyStats(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, n := range g.c.state.Nodes {
		body, err := l7AdminGet(ctx, n.Netns, l7NodeEnvoyAdmin, "/stats?filter="+url.QueryEscape(`^listener_manager\.(total_listeners_draining|listener_modified|lds\.update_success)$`))
		if err != nil {
			out[n.Name] = err.Error()
			continue
		}
		stats := strings.Join(strings.Fields(strings.ReplaceAll(string(body), "listener_manager.", "")), " ")
		// Allocated vs held by the allocator: what RSS is made of.
		if raw, err := l7AdminGet(ctx, n.Netns, l7NodeEnvoyAdmin, "/memory"); err == nil {
			var m struct {
				Allocated string `json:"allocated"`
				HeapSize  string `json:"heap_size"`
			}
			if json.Unmarshal(raw, &m) == nil {
				a, _ := strconv.ParseInt(m.Allocated, 10, 64)
				h, _ := strconv.ParseInt(m.HeapSize, 10, 64)
				stats += fmt.Sprintf(" memory allocated: %s heap: %s", mib(a), mib(h))
			}
		}
		out[n.Name] = stats
	}
	return out
}

// operatorErrors counts the "Reconciler error" lines of the gateway-api
// controller in the leader's log, and returns the first.
func (g *gwBench) operatorErrors(ctx context.Context) (int, string) {
	raw, err := g.c.client.CoreV1().Pods("kube-system").GetLogs(g.leader, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return -1, err.Error()
	}
	if f := os.Getenv("GWDUMP"); f != "" {
		_ = os.WriteFile(f, raw, 0o644)
	}
	n, first := 0, ""
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, "Reconciler error") && strings.Contains(l, "gateway-api") {
			if n == 0 {
				first = l
			}
			n++
		}
	}
	return n, first
}

// procsIn lists the processes in the cgroup dir (and below) whose command
// name is comm.
func procsIn(dir, comm string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(raw)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err == nil && strings.TrimSpace(string(name)) == comm {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// cpu is each process's pod cgroup CPU time, by role and node.
func (g *gwBench) cpu() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, p := range g.procs {
		d, err := cgroupUsage(p.cgroup)
		if err != nil {
			g.b.Fatalf("%s on %s: %v", p.role, p.node, err)
		}
		out[p.role+" "+p.node] = d
	}
	return out
}

// rss is each process's resident memory in bytes (VmRSS), by role and node.
func (g *gwBench) rss() map[string]int64 {
	out := map[string]int64{}
	for _, p := range g.procs {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil {
			g.b.Fatalf("%s on %s: %v", p.role, p.node, err)
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					g.b.Fatalf("%s VmRSS %q: %v", p.role, v, err)
				}
				out[p.role+" "+p.node] = kb << 10
			}
		}
	}
	return out
}

func cpuDelta(a, b map[string]time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	for k, v := range b {
		out[k] = v - a[k]
	}
	return out
}

// gwArm is one way from the root namespace to the echo pod.
type gwArm struct {
	name    string
	url     string
	reqs    int
	errs    int
	elapsed time.Duration
	lat     []time.Duration
}

func (a *gwArm) rate() float64 {
	if a.elapsed == 0 {
		return 0
	}
	return float64(a.reqs) / a.elapsed.Seconds()
}

// throughput runs the arms in turns: gwConcurrency workers, keep-alive
// GETs of /route-0, for gwArmDuration each.
func (g *gwBench) throughput(ctx context.Context) ([]*gwArm, error) {
	arms := []*gwArm{
		{name: "gateway", url: g.base + "/route-0"},
		{name: "direct", url: g.direct() + "/route-0"},
	}
	for _, a := range arms {
		hc := gwClient()
		if _, err := g.load(ctx, hc, a.url, gwWarmup); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", a.name, err)
		}
		hc.CloseIdleConnections()
	}
	for r := range gwRounds {
		for j := range arms {
			a := arms[(r+j)%len(arms)]
			hc := gwClient()
			res, err := g.load(ctx, hc, a.url, gwArmDuration)
			hc.CloseIdleConnections()
			if err != nil {
				return nil, fmt.Errorf("%s: round %d: %w", a.name, r+1, err)
			}
			a.reqs += res.reqs
			a.errs += res.errs
			a.elapsed += res.elapsed
			a.lat = append(a.lat, res.lat...)
			progress(g.b, "round %d/%d %-8s %.0f requests/s (%d errors)", r+1, gwRounds, a.name, float64(res.reqs)/res.elapsed.Seconds(), res.errs)
		}
	}
	for _, a := range arms {
		slices.Sort(a.lat)
	}
	return arms, nil
}

type gwLoad struct {
	reqs, errs int
	elapsed    time.Duration
	lat        []time.Duration
}

// load sends GETs to url from gwConcurrency workers for d.
func (g *gwBench) load(ctx context.Context, hc *http.Client, url string, d time.Duration) (gwLoad, error) {
	ctx, cancel := context.WithTimeout(ctx, d+5*time.Second)
	defer cancel()
	var (
		ok, bad atomic.Int64
		mu      sync.Mutex
		lat     []time.Duration
		wg      sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range gwConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				code, err := g.get(ctx, hc, url)
				if err != nil || code != http.StatusOK {
					bad.Add(1)
					continue
				}
				ok.Add(1)
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := gwLoad{reqs: int(ok.Load()), errs: int(bad.Load()), elapsed: time.Since(start), lat: lat}
	if res.reqs == 0 {
		return res, fmt.Errorf("no request of %s succeeded (%d failed)", url, res.errs)
	}
	return res, nil
}

type gwReport struct {
	routes                 int
	loadBefore, loadAfter  string
	leader                 string
	concurrency            int
	armDuration            time.Duration
	rounds                 int
	created                time.Duration
	allServing, allStatus  time.Duration
	samples                []gwSample
	truncated              bool
	arms                   []*gwArm
	mem0, memN, memChanged map[string]int64
	cpuGrow, cpuChanges    map[string]time.Duration
	cpuLoad, cpuAll        map[string]time.Duration
	took                   time.Duration
	// operatorErrors counts the leader's failed reconciles (each one backs
	// off the next); -1: its log was not readable.
	operatorErrors     int
	operatorFirstError string
	// envoyStats: per node, Envoy's listener counters after the changes.
	envoyStats map[string]string
}

func (r *gwReport) percentiles(f func(gwSample) time.Duration) (p50, p99, worst time.Duration) {
	var ds []time.Duration
	for _, s := range r.samples {
		ds = append(ds, f(s))
	}
	slices.Sort(ds)
	return percentile(ds, 0.5), percentile(ds, 0.99), ds[len(ds)-1]
}

func mib(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }

func (r *gwReport) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n== Gateway API: %d HTTPRoutes on one Gateway ==\n", r.routes)
	fmt.Fprintf(&sb, "One 2-node local cluster with the chart's gatewayAPI.enabled=true; one echo-basic pod on node 2 behind Service\n")
	fmt.Fprintf(&sb, "echo; Gateway web (one HTTP listener, port 80, an address of the pool); each HTTPRoute one Exact path to echo.\n")
	fmt.Fprintf(&sb, "Client: this process, in the host's root namespace, keep-alive HTTP/1.1 GETs to the Gateway's address.\n")
	fmt.Fprintf(&sb, "Machine load (1/5/15 min) before: %s; after: %s (a shared 2-core machine).\n\n", r.loadBefore, r.loadAfter)

	fmt.Fprintf(&sb, "0 -> %d routes: created (16 writers) in %s; all serving (a 200 on each path) %s and all Accepted\n", r.routes, r.created.Round(time.Millisecond), r.allServing.Round(time.Millisecond))
	fmt.Fprintf(&sb, "with the listener's attachedRoutes = %d %s after the first create.\n\n", r.routes, r.allStatus.Round(time.Millisecond))

	if len(r.samples) > 0 {
		errs := 0
		for _, s := range r.samples {
			errs += s.errors
		}
		fmt.Fprintf(&sb, "One more HTTPRoute (a new Exact path) at %d..%d routes, one at a time, %s apart: from just before the\n", r.routes, r.routes+len(r.samples)-1, gwSettle)
		fmt.Fprintf(&sb, "create call to the first 200 on its path through the Gateway (polled every 2 ms, a new connection each;\n")
		fmt.Fprintf(&sb, "404 before), to its Accepted status (polled every 10 ms), and to the first 200 on a keep-alive connection\n")
		fmt.Fprintf(&sb, "opened before the write. %d changes", len(r.samples))
		if r.truncated {
			fmt.Fprintf(&sb, " (stopped at the %s budget)", gwChangeBudget)
		}
		fmt.Fprintf(&sb, "; failed requests meanwhile (not 404): %d.\n", errs)
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tp50\tp99\tmax\ttarget p99\t ")
		p50, p99, worst := r.percentiles(func(s gwSample) time.Duration { return s.serving })
		verdict := "met"
		if p99 > gwTarget {
			verdict = "missed"
		}
		fmt.Fprintf(tw, "write -> serving\t%s\t%s\t%s\t<= %s\t %s (p99 = %.2fx the target)\n", ms(p50), ms(p99), ms(worst), gwTarget, verdict, float64(p99)/float64(gwTarget))
		p50, p99, worst = r.percentiles(func(s gwSample) time.Duration { return s.status })
		fmt.Fprintf(tw, "write -> Accepted status\t%s\t%s\t%s\t\t \n", ms(p50), ms(p99), ms(worst))
		var kept []time.Duration
		for _, s := range r.samples {
			if s.keepAlive > 0 {
				kept = append(kept, s.keepAlive)
			}
		}
		slices.Sort(kept)
		if len(kept) > 0 {
			fmt.Fprintf(tw, "write -> serving, older keep-alive connection\t%s\t%s\t%s\t\t %d of %d within %s of serving\n", ms(percentile(kept, 0.5)), ms(percentile(kept, 0.99)), ms(kept[len(kept)-1]), len(kept), len(r.samples), gwKeepAliveWait)
		} else {
			fmt.Fprintf(tw, "write -> serving, older keep-alive connection\t-\t-\t-\t\t none of %d within %s of serving\n", len(r.samples), gwKeepAliveWait)
		}
		tw.Flush()
	}

	if len(r.arms) == 2 {
		gw, d := r.arms[0], r.arms[1]
		fmt.Fprintf(&sb, "\nRequests/s, GET /route-0 at %d routes: %d workers, arms taking turns, %d runs of %s each (after a %s warm-up);\n", r.routes+len(r.samples), r.concurrency, r.rounds, r.armDuration, gwWarmup)
		fmt.Fprintf(&sb, "gateway: to the Gateway's address (the announcing node's Envoy, then the pod); direct: to the pod's IP through\n")
		fmt.Fprintf(&sb, "its node (a host route). Envoy CPU: both node Envoys over both arms' runs.\n")
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "arm\trequests/s\trequests\terrors\tp50\tp99\t ")
		for _, a := range r.arms {
			fmt.Fprintf(tw, "%s\t%.0f\t%d\t%d\t%s\t%s\t \n", a.name, a.rate(), a.reqs, a.errs, us(percentile(a.lat, 0.5)), us(percentile(a.lat, 0.99)))
		}
		tw.Flush()
		fmt.Fprintf(&sb, "gateway / direct requests/s: %s\n", ratio(gw.rate(), d.rate()))
		var envoy time.Duration
		for k, v := range r.cpuLoad {
			if strings.HasPrefix(k, "envoy ") {
				envoy += v
			}
		}
		if gw.reqs > 0 {
			fmt.Fprintf(&sb, "node Envoys' CPU during the runs: %.2f s, %.3f CPU-s per 1,000 gateway requests\n", envoy.Seconds(), envoy.Seconds()/float64(gw.reqs)*1000)
		}
	}

	fmt.Fprintf(&sb, "\nCPU seconds (pod cgroups) and RSS (VmRSS of the process); operator: the Lease holder %s.\n", r.leader)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "process\tCPU: 0->%d routes\tCPU: %d changes\tCPU: requests\tCPU: whole run\tRSS at 0\tRSS at %d\tRSS after changes\t \n", r.routes, len(r.samples), r.routes)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range r.cpuAll {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%.2f s\t%.2f s\t%.2f s\t%.2f s\t%s\t%s\t%s\t \n", k, r.cpuGrow[k].Seconds(), r.cpuChanges[k].Seconds(), r.cpuLoad[k].Seconds(), r.cpuAll[k].Seconds(), mib(r.mem0[k]), mib(r.memN[k]), mib(r.memChanged[k]))
	}
	tw.Flush()
	for _, k := range keys {
		if strings.HasPrefix(k, "operator ") {
			fmt.Fprintf(&sb, "operator RSS at %d routes / Envoy Gateway's controller at 1k routes (≈ 208 MiB, its published figure): %.2fx\n", r.routes, float64(r.memN[k])/(208<<20))
		}
	}
	for _, n := range slices.Sorted(maps.Keys(r.envoyStats)) {
		fmt.Fprintf(&sb, "Envoy on %s after the changes: %s\n", n, r.envoyStats[n])
	}
	switch {
	case r.operatorErrors < 0:
		fmt.Fprintf(&sb, "operator log not readable: %s\n", r.operatorFirstError)
	case r.operatorErrors > 0:
		fmt.Fprintf(&sb, "operator: %d failed reconciles (retried with backoff); first: %s\n", r.operatorErrors, r.operatorFirstError)
	default:
		fmt.Fprintf(&sb, "operator: no failed reconcile\n")
	}
	fmt.Fprintf(&sb, "\nWhole benchmark: %s\n", r.took.Round(time.Second))
	return sb.String()
}

func (r *gwReport) metrics(b *testing.B) {
	b.ReportMetric(0, "ns/op")
	if len(r.samples) > 0 {
		p50, p99, _ := r.percentiles(func(s gwSample) time.Duration { return s.serving })
		b.ReportMetric(msf(p50), "change-p50-ms")
		b.ReportMetric(msf(p99), "change-p99-ms")
	}
	b.ReportMetric(r.allServing.Seconds(), "all-serving-s")
	if len(r.arms) == 2 {
		b.ReportMetric(r.arms[0].rate(), "gateway-req/s")
		b.ReportMetric(r.arms[1].rate(), "direct-req/s")
		if r.arms[1].rate() > 0 {
			b.ReportMetric(r.arms[0].rate()/r.arms[1].rate(), "gateway/direct")
		}
	}
	for k, v := range r.memN {
		if strings.HasPrefix(k, "operator ") {
			b.ReportMetric(float64(v)/(1<<20), "operator-MiB")
		}
	}
}

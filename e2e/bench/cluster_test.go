package bench

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// env is where the tools are.
type env struct {
	toolsDir string // bin/ (kube-proxy, ...) and images/
	binDir   string // membrane, membrane-cni, membrane-agent
	log      *slog.Logger
}

// newEnv skips unless the benchmark can run, and finds the tools.
func newEnv(b *testing.B) env {
	b.Helper()
	e := benchEnv(b, "netfilter")
	if _, err := os.Stat(filepath.Join(e.toolsDir, "bin", "kube-proxy")); err != nil {
		b.Fatalf("bench: %v: run `make tools build` first", err)
	}
	for _, tool := range []string{"nsenter", "iptables", "iptables-save", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("bench: %s not found: run `make tools` (Debian packages util-linux, iptables, nftables)", tool)
		}
	}
	return e
}

// benchEnv skips unless the benchmark can run (not -short; root, or it
// fails in CI; needs names what else root is needed for), and finds the
// tool and binary directories and membrane-agent.
func benchEnv(b *testing.B, needs string) env {
	b.Helper()
	if testing.Short() {
		b.Skip("bench: skipped with -short (it brings up local clusters)")
	}
	testenv.RequireRoot(b, fmt.Sprintf("the benchmark's local clusters (network namespaces, cgroups, eBPF, %s)", needs))
	e := env{toolsDir: os.Getenv("MEMBRANE_CACHE"), binDir: os.Getenv("MEMBRANE_BIN_DIR")}
	if e.toolsDir == "" {
		home, _ := os.UserHomeDir()
		e.toolsDir = filepath.Join(home, ".cache", "membrane")
	}
	if e.binDir == "" {
		abs, _ := filepath.Abs("../../bin")
		e.binDir = abs
	}
	if _, err := os.Stat(filepath.Join(e.binDir, "membrane-agent")); err != nil {
		b.Fatalf("bench: %v: run `make tools build` first", err)
	}
	e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return e
}

const benchNS = "bench"

// cluster is one local cluster with the bench workload: two http-echo
// backends (one per node) and a client pod on node 1.
type cluster struct {
	b       *testing.B
	env     env
	state   *localcluster.State
	client  kubernetes.Interface
	cfg     *rest.Config // the client's, certificates in memory
	backIPs []netip.Addr // the backend pods, sorted by node
	eps     []discoveryv1.Endpoint
	client0 *corev1.Pod // the pod the load generator joins
	node    localcluster.NodeState
	created int // services created so far: svc-0 .. svc-(created-1)
	downed  bool
}

// upCluster brings up a 2-node cluster (removing a leftover of the same
// name first); it goes down in down() or, at the latest, in b's cleanup.
func upCluster(ctx context.Context, b *testing.B, e env, name, podCIDR string, noMembrane bool) *cluster {
	b.Helper()
	return upClusterWith(ctx, b, e, localcluster.Options{Name: name, PodCIDR: podCIDR, NoMembrane: noMembrane})
}

// upClusterWith brings up the 2-node cluster of o (the default Service
// CIDR, this environment's tools and binaries).
func upClusterWith(ctx context.Context, b *testing.B, e env, o localcluster.Options) *cluster {
	b.Helper()
	if err := localcluster.Down(context.WithoutCancel(ctx), e.log, o.Name); err != nil {
		b.Fatalf("remove leftover cluster %s: %v", o.Name, err)
	}
	upCtx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	start := time.Now()
	o.Nodes, o.ServiceCIDR, o.ToolsDir, o.BinDir = 2, localcluster.DefaultServiceCIDR, e.toolsDir, e.binDir
	s, err := localcluster.Up(upCtx, e.log, o)
	if err != nil {
		b.Fatalf("bring up cluster %s: %v", o.Name, err)
	}
	c := &cluster{b: b, env: e, state: s, node: s.Nodes[0]}
	b.Cleanup(c.down)
	progress(b, "cluster %s up in %s (Membrane: %v)", o.Name, time.Since(start).Round(time.Millisecond), !o.NoMembrane)
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Layout().Kubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	// Certificates in memory: with file names, client-go keeps reloading
	// them in the background, and complains once Down removed them.
	if err := rest.LoadTLSFiles(cfg); err != nil {
		b.Fatal(err)
	}
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = "", "", ""
	cfg.QPS, cfg.Burst = 5000, 10000
	c.cfg = cfg
	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		b.Fatal(err)
	}
	return c
}

// down removes the cluster; safe to call twice.
func (c *cluster) down() {
	if c.downed {
		return
	}
	c.downed = true
	if c.b.Failed() {
		tailLogs(c.b, c.state.Layout().LogDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := localcluster.Down(ctx, c.env.log, c.state.Name); err != nil {
		c.b.Errorf("remove cluster %s: %v", c.state.Name, err)
	}
}

// tailLogs shows the end of every log of a failed run.
func tailLogs(b *testing.B, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
		b.Logf("--- last lines of %s:\n%s", e.Name(), strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}

// deploy creates the namespace, the backends and the client pod, and waits
// until they run: a backend on each node, the client on node 1.
func (c *cluster) deploy(ctx context.Context) error {
	start := time.Now()
	_, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	labels := map[string]string{"app": "backend"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: benchNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					Containers: []corev1.Container{{
						Name:  "http-echo",
						Image: "hashicorp/http-echo:1.0.0",
						Args:  []string{"-text=Hello from Backend Service!", "-listen=:8080"},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: benchPortHTTP}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	if _, err := c.client.AppsV1().Deployments(benchNS).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create backends: %w", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: benchNS, Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": c.node.Name},
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers: []corev1.Container{{
				Name:    "client",
				Image:   "busybox:1.36",
				Command: []string{"/bin/sh", "-c", "while true; do sleep 3600; done"},
			}},
		},
	}
	if _, err := c.client.CoreV1().Pods(benchNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create client pod: %w", err)
	}
	err = poll(ctx, 2*time.Minute, "backends Ready on both nodes and the client Running", func() (bool, error) {
		if err := c.state.CheckProcesses(); err != nil {
			return false, err
		}
		pods, err := c.client.CoreV1().Pods(benchNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		byNode := map[string]netip.Addr{}
		c.client0 = nil
		for i, p := range pods.Items {
			switch {
			case p.Labels["app"] == "backend" && podReady(&p) && p.Status.PodIP != "":
				byNode[p.Spec.NodeName] = netip.MustParseAddr(p.Status.PodIP)
			case p.Name == "client" && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "":
				c.client0 = &pods.Items[i]
			}
		}
		if len(byNode) != 2 || c.client0 == nil {
			return false, nil
		}
		c.backIPs, c.eps = nil, nil
		for _, n := range c.state.Nodes {
			ip, ok := byNode[n.Name]
			if !ok {
				return false, nil
			}
			c.backIPs = append(c.backIPs, ip)
			c.eps = append(c.eps, discoveryv1.Endpoint{
				Addresses:  []string{ip.String()},
				NodeName:   ptr.To(n.Name),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			})
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	progress(c.b, "workload up in %s: backends %v (one per node), client pod %s on %s",
		time.Since(start).Round(time.Millisecond), c.backIPs, c.client0.Status.PodIP, c.node.Name)
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func serviceName(i int) string { return "svc-" + strconv.Itoa(i) }

func (c *cluster) service(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName(i), Namespace: benchNS},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: benchPortHTTP, Protocol: corev1.ProtocolTCP}}},
	}
}

func (c *cluster) slice(i int) *discoveryv1.EndpointSlice {
	name := serviceName(i)
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(benchPortHTTP)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   c.eps,
	}
}

// grow creates services (each a selector-less Service with one port and an
// EndpointSlice of both backends) until `total` exist, with 32 workers.
func (c *cluster) grow(ctx context.Context, total int) error {
	if total <= c.created {
		return nil
	}
	start, from := time.Now(), c.created
	// About 3 minutes for 10,000 on an idle 2-core machine.
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	jobs := make(chan int)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				err := createIgnoringExists(func() error {
					_, err := c.client.CoreV1().Services(benchNS).Create(ctx, c.service(i), metav1.CreateOptions{})
					return err
				})
				if err == nil {
					err = createIgnoringExists(func() error {
						_, err := c.client.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, c.slice(i), metav1.CreateOptions{})
						return err
					})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("create %s: %w", serviceName(i), err)
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := from; i < total && ctx.Err() == nil; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create services: %w", err)
	}
	c.created = total
	progress(c.b, "%s: created services %d..%d in %s", c.state.Name, from, total-1, time.Since(start).Round(time.Millisecond))
	return nil
}

func createIgnoringExists(create func() error) error {
	if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// createOne creates the next service: its EndpointSlice first, then, once
// afterSlice returns (told when the slice was created: to let the datapath
// settle and to start watching), the Service, so that the Service create
// call is the moment the whole service exists in the API. It returns the
// ClusterIP and the time that call returned.
func (c *cluster) createOne(ctx context.Context, afterSlice func(sliceCreated time.Time) error) (netip.Addr, time.Time, error) {
	i := c.created
	sliceCreated := time.Now()
	if _, err := c.client.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, c.slice(i), metav1.CreateOptions{}); err != nil {
		return netip.Addr{}, time.Time{}, fmt.Errorf("create endpointslice %s: %w", serviceName(i), err)
	}
	if err := afterSlice(sliceCreated); err != nil {
		return netip.Addr{}, time.Time{}, err
	}
	svc, err := c.client.CoreV1().Services(benchNS).Create(ctx, c.service(i), metav1.CreateOptions{})
	returned := time.Now()
	if err != nil {
		return netip.Addr{}, time.Time{}, fmt.Errorf("create service %s: %w", serviceName(i), err)
	}
	c.created++
	vip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}, time.Time{}, fmt.Errorf("service %s: ClusterIP %q: %w", svc.Name, svc.Spec.ClusterIP, err)
	}
	return vip, returned, nil
}

// clusterIP returns the VIP of service i.
func (c *cluster) clusterIP(ctx context.Context, i int) (netip.Addr, error) {
	svc, err := c.client.CoreV1().Services(benchNS).Get(ctx, serviceName(i), metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(svc.Spec.ClusterIP)
}

// kubernetesVIP is the API server's Service.
func (c *cluster) kubernetesVIP(ctx context.Context) (netip.AddrPort, error) {
	svc, err := c.client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return netip.AddrPort{}, err
	}
	vip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(vip, uint16(svc.Spec.Ports[0].Port)), nil
}

// podCgroup is the client pod's cgroup (the node runner's layout).
func (c *cluster) podCgroup() string {
	return filepath.Join(c.state.Layout().CgroupDir(c.state.CgroupRoot), c.node.Name, "pods", string(c.client0.UID))
}

// nodeCgroup is node n's cgroup subtree.
func (c *cluster) nodeCgroup(n localcluster.NodeState) string {
	return filepath.Join(c.state.Layout().CgroupDir(c.state.CgroupRoot), n.Name)
}

// poll checks cond every 200 ms until it holds, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	return pollEvery(ctx, 200*time.Millisecond, timeout, what, cond)
}

// pollEvery is poll with another interval.
func pollEvery(ctx context.Context, interval, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// benchContext is done on SIGINT or SIGTERM, and 2 minutes before go
// test's own timeout (at most 20 minutes in): a benchmark must finish, and
// remove its cluster, before that timeout panics and skips every cleanup.
func benchContext(b *testing.B) context.Context {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	b.Cleanup(stop)
	deadline := 20 * time.Minute
	if f := flag.Lookup("test.timeout"); f != nil {
		if t, err := time.ParseDuration(f.Value.String()); err == nil && t > 0 {
			deadline = min(deadline, t-2*time.Minute)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	b.Cleanup(cancel)
	return ctx
}

// runPods creates pods in ns and waits (2 minutes at most) until each runs
// with an address; it returns them as they run, with their addresses, in
// their order.
func (c *cluster) runPods(ctx context.Context, ns string, pods []*corev1.Pod) ([]*corev1.Pod, []netip.Addr, error) {
	for _, p := range pods {
		if _, err := c.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, nil, fmt.Errorf("create pod %s: %w", p.Name, err)
		}
	}
	got := make([]*corev1.Pod, len(pods))
	err := poll(ctx, 2*time.Minute, fmt.Sprintf("%d pods Running with an IP", len(pods)), func() (bool, error) {
		if err := c.state.CheckProcesses(); err != nil {
			return false, err
		}
		for i, p := range pods {
			q, err := c.client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil || q.Status.Phase != corev1.PodRunning || q.Status.PodIP == "" {
				return false, nil
			}
			got[i] = q
		}
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	ips := make([]netip.Addr, len(got))
	for i, p := range got {
		if ips[i], err = netip.ParseAddr(p.Status.PodIP); err != nil {
			return nil, nil, fmt.Errorf("pod %s: IP %q: %w", p.Name, p.Status.PodIP, err)
		}
	}
	return got, ips, nil
}

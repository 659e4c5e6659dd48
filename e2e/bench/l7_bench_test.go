package bench

// BenchmarkL7AddedLatency: the request latency and CPU an L7 HTTP policy
// adds, with Membrane's node Envoy against a sidecar pair as a sidecar mesh
// runs it (iptables redirects into both sidecars), on one 2-node cluster,
// with the same workload, the same Envoy binary and the same RBAC rules.
//
// Workload: three echo-basic pods (port 3000) on node 2, identical but for
// a label: payment-l7, selected by a MembraneNetworkPolicy with L7 rules
// (GET /api/v1/payments/.*, POST /api/v1/payments$ from app=client on TCP
// 3000); payment-plain and payment-mesh, selected by L3/L4 policies
// (app=client to TCP 3000, and to the server sidecar's port for
// payment-mesh). Two busybox pods on node 1, client and client-mesh, both
// app=client: the load generator is this process, its sockets made in a
// client pod's network namespace (not its cgroup: the pod IPs are used, no
// Service).
//
// Arms, every request GET /api/v1/payments/P1:
//
//   - direct: client to payment-plain:3000 (the policy datapath, no proxy);
//   - membrane: client to payment-l7:3000, which the datapath redirects to
//     node 2's Envoy (the real path: tc, TPROXY, RBAC, access log to the
//     agent);
//   - sidecar pair: client-mesh to payment-mesh:3000. client-mesh's nat
//     OUTPUT rules redirect the connection to its sidecar's outbound
//     listener (original_dst listener filter, translate's ORIGINAL_DST
//     cluster; the sidecar's own sockets carry SO_MARK 1337, which the
//     rules let out, as a mesh lets its proxy's user out); payment-mesh's
//     nat PREROUTING rules redirect it to its sidecar's inbound port: the
//     listener xds/translate generates for payment-mesh:3000 with the same
//     rules (its HTTP connection manager and RBAC filter are checked equal
//     to the node Envoy's live ones), whose cluster goes to 127.0.0.1:3000,
//     and whose access log goes to this process. Both run the pinned Envoy
//     in cgroups of their own; the rules are the host's iptables
//     (nf_tables) in the pods' network namespaces.
//
// Load: fixed rate, keep-alive HTTP/1.1 over a pool of at most 4
// connections per arm (new connections would measure the TCP handshakes
// more than the proxies). Per arm a warm-up, then the requests in rounds,
// arms taking turns (each round starting one arm further). Every response
// must be 200, and a DELETE (which no rule allows) must get 403 through
// both proxies and 200 directly; the proxies' RBAC counters must have
// allowed every request of their arm.
//
// CPU, per arm during its measured requests: membrane counts node 2's
// Envoy pod cgroup and node 2's agent pod cgroup (the access-log receiver
// and everything else the agent did meanwhile); the sidecar pair counts
// the two sidecars' cgroups. Kernel work done in those processes' context
// is in their cgroups: their syscalls, and the packets they send, which
// over veth and loopback the kernel mostly carries through tc, netfilter
// and the receiver's TCP in the sender's context. So the packets the load
// generator sends (the client pod's nat OUTPUT REDIRECT in the sidecar
// arm; node 2's tc redirect and TPROXY to the node Envoy in the membrane
// arm) are charged to neither arm, while the server pod's PREROUTING
// REDIRECT runs on the client sidecar's sends and counts for the sidecar
// pair. Softirq time the kernel spent outside any process is only in the
// machine-wide /proc/stat softirq counter, which every other process on
// the machine adds to as well: it is printed for every arm, and each
// proxy arm is charged its excess over the direct arm's (0 when below).
// Not counted: the load generator's and the echo pods' CPU (alike in
// every arm).
//
// Profiles: during each arm's turns node 2's Envoy's CPU (its background
// in the arms that do not use it) and node 2's BPF programs' run time
// (BPF run-time statistics, on while the benchmark runs) are taken, and
// the L7 redirect's counter (packets hairpinned to the proxy) over the
// run; after the measurement every
// Envoy's worker count, connection and request counters, request-time
// histograms and access-log stats are printed; MEMBRANE_BENCH_L7_PROFILE_DIR saves each Envoy's full stats
// there too and, when perf is installed, samples node 2's agent and Envoy
// during the measured rounds (perf record -g), printing the top of each
// report and saving the data and the reports there.
//
//	MEMBRANE_BENCH_L7_REQUESTS=2000   measured requests per arm
//	MEMBRANE_BENCH_L7_PROFILE_DIR=    where to save the Envoys' stats

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/xds/accesslog"
	"github.com/membrane-mesh/membrane/xds/translate"
)

const (
	l7BenchCluster = "bench-l7"
	l7BenchPodCIDR = "10.239.0.0/16"
	l7BenchNS      = "bench-l7"

	l7AppPort           = 3000
	l7ClientSidecarPort = 15101 // the client sidecar's outbound listener (client-mesh)
	l7ServerSidecarPort = 15102 // the server sidecar's inbound listener (payment-mesh's IP)
	l7SidecarAdminPort  = 15100 // 127.0.0.1 in each sidecar's pod
	// l7SidecarMark marks the client sidecar's upstream sockets (SO_MARK):
	// its iptables rules let them out, as a mesh's rules let its proxy's
	// user out.
	l7SidecarMark    = 1337
	l7NodeEnvoyAdmin = "127.0.0.1:9901"
	// The node Envoy's access-log cluster (the agent's accessLogCluster);
	// the server sidecar's has the same name, a stand-in in this process.
	l7AccessLogCluster = "membrane-agent"

	l7Path       = "/api/v1/payments/P1"
	l7Rate       = 200 // requests per second, every arm
	l7Pool       = 4   // connections per arm at most
	l7Warmup     = 200 // requests per arm before measuring
	l7Rounds     = 4
	l7ArmBudget  = 60 * time.Second // warm-up and measured requests of one arm
	l7ReqTimeout = 5 * time.Second
	l7Target     = 0.5 // membrane / sidecar pair: added p50, added p99, CPU per request
)

const (
	l7ArmDirect   = "direct"
	l7ArmMembrane = "membrane"
	l7ArmSidecar  = "sidecar pair"
)

// l7HTTPRules are the payment pod's L7 rules, as the policy's and as
// translate's input.
func l7HTTPRules() ([]v1alpha1.PortRuleHTTP, []translate.HTTPRule) {
	api := []v1alpha1.PortRuleHTTP{
		{Method: "GET", Path: "/api/v1/payments/.*"},
		{Method: "POST", Path: "/api/v1/payments$"},
	}
	var tr []translate.HTTPRule
	for _, r := range api {
		tr = append(tr, translate.HTTPRule{Method: r.Method, Path: r.Path})
	}
	return api, tr
}

func BenchmarkL7AddedLatency(b *testing.B) {
	e := newEnv(b)
	envoyBin := testenv.Tool(b, "envoy")
	requests := 2000
	if v := os.Getenv("MEMBRANE_BENCH_L7_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < l7Rounds {
			b.Fatalf("MEMBRANE_BENCH_L7_REQUESTS=%q: want >= %d", v, l7Rounds)
		}
		requests = n
	}
	ctx := benchContext(b)
	begin := time.Now()
	load := strings.TrimSpace(wgLoadAvg())

	c := upCluster(ctx, b, e, l7BenchCluster, l7BenchPodCIDR, false)
	defer c.down()
	l := &l7Bench{b: b, c: c, envoyBin: envoyBin, tmp: b.TempDir(), server: c.state.Nodes[1]}
	if err := l.deploy(ctx); err != nil {
		b.Fatal(err)
	}
	if err := l.applyPolicies(ctx); err != nil {
		b.Fatal(err)
	}
	if err := l.waitEnforcing(ctx, l7BenchNS); err != nil {
		b.Fatal(err)
	}

	// The sidecars' access logs.
	var logged atomic.Int64
	g := grpc.NewServer()
	accesslog.New(e.log, func(flow.HTTPLog) { logged.Add(1) }).Register(g)
	alsSock := filepath.Join(l.tmp, "als.sock")
	lis, err := net.Listen("unix", alsSock)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()

	serverNode, err := l.serverSidecarNode()
	if err != nil {
		b.Fatal(err)
	}
	server, err := l.startSidecar("server", l.mesh, func() (*bootstrapv3.Bootstrap, error) { return serverSidecarBootstrap(serverNode, alsSock) })
	if err != nil {
		b.Fatal(err)
	}
	defer server.stop(b)
	client, err := l.startSidecar("client", l.meshClient, clientSidecarBootstrap)
	if err != nil {
		b.Fatal(err)
	}
	defer client.stop(b)
	l.sidecars = []*l7Sidecar{server, client}
	if err := l.redirect(ctx, l.mesh, l7ServerRedirect()); err != nil {
		b.Fatal(err)
	}
	if err := l.redirect(ctx, l.meshClient, l7ClientRedirect()); err != nil {
		b.Fatal(err)
	}

	envoyCgroup, err := l.nodePodCgroup(ctx, "k8s-app=membrane-envoy")
	if err != nil {
		b.Fatal(err)
	}
	agentCgroup, err := l.nodePodCgroup(ctx, "k8s-app=membrane-agent")
	if err != nil {
		b.Fatal(err)
	}
	arms := []*l7Arm{
		{name: l7ArmDirect, ns: l.netns(l.client), base: fmt.Sprintf("http://%s:%d", l.plainIP, l7AppPort), deleteCode: http.StatusOK},
		{name: l7ArmMembrane, ns: l.netns(l.client), base: fmt.Sprintf("http://%s:%d", l.l7IP, l7AppPort), deleteCode: http.StatusForbidden,
			cpuParts: cgroupsCPU(envoyCgroup, agentCgroup),
			rbacNS:   l.server.Netns, rbacAdmin: l7NodeEnvoyAdmin},
		{name: l7ArmSidecar, ns: l.netns(l.meshClient), base: fmt.Sprintf("http://%s:%d", l.meshIP, l7AppPort), deleteCode: http.StatusForbidden,
			cpuParts: cgroupsCPU(server.cgroup, client.cgroup),
			rbacNS:   l.netns(l.mesh), rbacAdmin: fmt.Sprintf("127.0.0.1:%d", l7SidecarAdminPort)},
	}
	for _, a := range arms {
		a.watch = func() (time.Duration, error) { return cgroupUsage(agentCgroup) }
		a.watchEnvoy = func() (time.Duration, error) { return cgroupUsage(envoyCgroup) }
	}
	for _, a := range arms {
		if err := l.waitArm(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.sameRules(ctx, serverNode); err != nil {
		b.Fatal(err)
	}
	progress(b, "node Envoy on %s and the server sidecar: the same HTTP connection manager and RBAC filter (but for names)", l.server.Name)
	// Node 2's BPF programs, per arm: their run time (BPF run-time stats,
	// on while the probe is open) and the proxy redirect's counters.
	probe, err := openDPProbe([]string{l.c.state.Layout().NodeAgentPinDir(l.server.Name)}, []string{agentCgroup})
	if err != nil {
		b.Fatal(err)
	}
	defer probe.Close()
	l.probe = probe
	counters0, err := probe.nodes[0].maps.Counters()
	if err != nil {
		b.Fatal(err)
	}

	// Measurement: fresh pools, made after the policies are enforced (a
	// connection from before would keep its datapath verdict).
	for _, a := range arms {
		a.hc = l7Client(a.ns, true)
		defer a.hc.CloseIdleConnections()
		if a.rbacNS != "" {
			if a.rbacBefore, err = rbacAllowed(ctx, a.rbacNS, a.rbacAdmin); err != nil {
				b.Fatalf("%s: %v", a.name, err)
			}
		}
	}
	for _, a := range arms {
		if _, err := l.run(ctx, a, l7Warmup, false); err != nil {
			b.Fatalf("%s: warm-up: %v", a.name, err)
		}
		if err := a.expect(ctx, http.MethodDelete, a.deleteCode); err != nil {
			b.Fatal(err)
		}
		progress(b, "%s: warm-up of %d requests done, DELETE got %d", a.name, l7Warmup, a.deleteCode)
	}
	profileDir := os.Getenv("MEMBRANE_BENCH_L7_PROFILE_DIR")
	var perfs []*l7Perf
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			b.Fatal(err)
		}
		for _, p := range []struct{ name, cgroup string }{{"agent", agentCgroup}, {"node-envoy", envoyCgroup}} {
			pr, err := startPerf(profileDir, p.name, p.cgroup)
			if err != nil {
				b.Fatal(err)
			}
			if pr != nil {
				defer func() { _, _ = pr.stop(ctx) }() // a failed run's
				perfs = append(perfs, pr)
			}
		}
	}
	if err := l.rounds(ctx, arms, requests, "", 12); err != nil {
		b.Fatal(err)
	}
	for _, a := range arms {
		if err := a.expect(ctx, http.MethodDelete, a.deleteCode); err != nil {
			b.Fatal(err)
		}
		if a.rbacNS == "" {
			continue
		}
		after, err := rbacAllowed(ctx, a.rbacNS, a.rbacAdmin)
		if err != nil {
			b.Fatalf("%s: %v", a.name, err)
		}
		a.rbacDelta = after - a.rbacBefore
		if a.rbacDelta < float64(a.ok) {
			b.Fatalf("%s: the proxy's RBAC allowed %.0f requests, but %d got a 200: some bypassed it", a.name, a.rbacDelta, a.ok)
		}
	}
	_ = pollEvery(ctx, 100*time.Millisecond, 3*time.Second, "the server sidecar's access logs", func() (bool, error) {
		return logged.Load() >= int64(arms[2].ok), nil
	})
	var profiles strings.Builder
	counters1, err := probe.nodes[0].maps.Counters()
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(&profiles, "  node 2's BPF programs during the measured requests (run-time stats; every pod of node 2: tc policy and socket LB):\n")
	for _, a := range arms {
		fmt.Fprintf(&profiles, "    %-13s %s\n", a.name+":", a.bpfPerRequest())
	}
	fmt.Fprintf(&profiles, "  node 2's L7 redirect over the warm-up and measured requests: %d packets hairpinned to the proxy\n",
		counters1.ProxyHairpin-counters0.ProxyHairpin)
	for _, p := range perfs {
		top, err := p.stop(ctx)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&profiles, "  perf of %s during the measured rounds (every arm's time):\n%s", p.name, top)
	}
	if len(perfs) > 0 {
		fmt.Fprintf(&profiles, "  (perf's sampling costs the sampled processes CPU: this run's membrane CPU figures include it)\n")
	}
	for _, p := range []struct{ name, ns, admin string }{
		{"node-envoy", l.server.Netns, l7NodeEnvoyAdmin},
		{"client-sidecar", l.netns(l.meshClient), fmt.Sprintf("127.0.0.1:%d", l7SidecarAdminPort)},
		{"server-sidecar", l.netns(l.mesh), fmt.Sprintf("127.0.0.1:%d", l7SidecarAdminPort)},
	} {
		st, err := l7EnvoyProfile(ctx, p.ns, p.admin, p.name, profileDir)
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		fmt.Fprintf(&profiles, "  %s:\n%s", p.name, st)
	}
	rep := &l7Report{arms: arms, requests: requests, load: load, sidecarLogs: logged.Load(), envoyBin: envoyBin,
		sameBinary: l.sameBinaryAsNode(), took: time.Since(begin), profiles: profiles.String()}
	fmt.Print(rep.String())
	rep.metrics(b)
	recordSummary(b, rep.summary()...)
}

// rounds sends requests measured requests per arm in l7Rounds rounds, the
// arms taking turns (each round starting one arm further); after each
// arm's turn every sidecar and the cluster's processes must still run.
// Each turn's progress line starts with label and pads the arm's name to
// width.
func (l *l7Bench) rounds(ctx context.Context, arms []*l7Arm, requests int, label string, width int) error {
	perRound := (requests + l7Rounds - 1) / l7Rounds
	for r := range l7Rounds {
		n := min(perRound, requests-r*perRound)
		for j := range arms {
			a := arms[(r+j)%len(arms)]
			var bpf0 dpSnapshot
			if l.probe != nil {
				var err error
				if bpf0, err = l.probe.snapshot(); err != nil {
					return err
				}
			}
			lat, err := l.run(ctx, a, n, true)
			if err != nil {
				return fmt.Errorf("%s: round %d: %w", a.name, r+1, err)
			}
			if l.probe != nil {
				bpf1, err := l.probe.snapshot()
				if err != nil {
					return err
				}
				a.addBPF(bpf0, bpf1)
			}
			for _, s := range l.sidecars {
				if err := s.check(); err != nil {
					return err
				}
			}
			if err := l.c.state.CheckProcesses(); err != nil {
				return err
			}
			lat = slices.Sorted(slices.Values(lat))
			progress(l.b, "%sround %d/%d %-*s %d requests: p50 %s p99 %s", label, r+1, l7Rounds, width, a.name, len(lat),
				us(percentile(lat, 0.5)), us(percentile(lat, 0.99)))
		}
	}
	return nil
}

// l7Bench is the benchmark's cluster and workload.
type l7Bench struct {
	b        *testing.B
	c        *cluster
	envoyBin string
	tmp      string
	server   localcluster.NodeState // node 2: the payment pods

	// client and client-mesh on node 1; payment-l7, payment-plain and
	// payment-mesh on node 2. The -mesh pods have the sidecars and their
	// iptables redirects.
	client, meshClient, l7, plain, mesh           *corev1.Pod
	clientIP, meshClientIP, l7IP, plainIP, meshIP netip.Addr
	sidecars                                      []*l7Sidecar
	// probe, when set, reads node 2's BPF programs around each arm's turn.
	probe *dpProbe
}

func (l *l7Bench) netns(p *corev1.Pod) string {
	return filepath.Join(l.c.state.Layout().RunDir(), "netns", p.Spec.NodeName, string(p.UID))
}

func (l *l7Bench) podCgroup(node string, uid string) string {
	return filepath.Join(l.c.state.Layout().CgroupDir(l.c.state.CgroupRoot), node, "pods", uid)
}

// deploy starts the client on node 1 and the two payment pods on node 2,
// and waits until they run.
func (l *l7Bench) deploy(ctx context.Context) error {
	start := time.Now()
	if _, err := l.c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l7BenchNS}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	pods := []*corev1.Pod{
		l.clientPod(l7BenchNS, "client", ""), l.clientPod(l7BenchNS, "client-mesh", ""),
		l.paymentPod(l7BenchNS, "l7", ""), l.paymentPod(l7BenchNS, "plain", ""), l.paymentPod(l7BenchNS, "mesh", ""),
	}
	got, ips, err := l.c.runPods(ctx, l7BenchNS, pods)
	if err != nil {
		return err
	}
	l.client, l.meshClient, l.l7, l.plain, l.mesh = got[0], got[1], got[2], got[3], got[4]
	l.clientIP, l.meshClientIP, l.l7IP, l.plainIP, l.meshIP = ips[0], ips[1], ips[2], ips[3], ips[4]
	progress(l.b, "pods running in %s: client %s and client-mesh %s on %s, payment-l7 %s, payment-plain %s and payment-mesh %s on %s",
		time.Since(start).Round(time.Millisecond), l.clientIP, l.meshClientIP, l.client.Spec.NodeName, l.l7IP, l.plainIP, l.meshIP, l.server.Name)
	return nil
}

// paymentPod is the echo-basic pod payment-<variant> in namespace ns on
// node 2, labelled app=payment and variant, running as serviceAccount
// (the namespace's default when empty).
func (l *l7Bench) paymentPod(ns, variant, serviceAccount string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "payment-" + variant, Namespace: ns, Labels: map[string]string{"app": "payment", "variant": variant}},
		Spec: corev1.PodSpec{
			NodeName:                      l.server.Name,
			ServiceAccountName:            serviceAccount,
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers: []corev1.Container{{
				Name:  "echo",
				Image: "gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: l7AppPort}},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				},
			}},
		},
	}
}

// clientPod is an idle busybox pod in namespace ns on node 1, labelled
// app=client, running as serviceAccount (the namespace's default when
// empty).
func (l *l7Bench) clientPod(ns, name, serviceAccount string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			NodeName:                      l.c.state.Nodes[0].Name,
			ServiceAccountName:            serviceAccount,
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers:                    []corev1.Container{{Name: "idle", Image: "busybox:1.36", Command: []string{"sleep", "3600"}}},
		},
	}
}

// applyPolicies creates payment-l7's L7 policy and payment-plain's L3/L4 one.
func (l *l7Bench) applyPolicies(ctx context.Context) error {
	api, _ := l7HTTPRules()
	from := []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "client"}}}
	tcp := func(port int) v1alpha1.PortProtocol {
		return v1alpha1.PortProtocol{Port: strconv.Itoa(port), Protocol: v1alpha1.ProtoTCP}
	}
	policy := func(name, variant string, ports v1alpha1.PortRule) *v1alpha1.MembraneNetworkPolicy {
		return &v1alpha1.MembraneNetworkPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "MembraneNetworkPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: l7BenchNS},
			Spec: &v1alpha1.Rule{
				EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "payment", "variant": variant}},
				Ingress:          []v1alpha1.IngressRule{{IngressCommonRule: v1alpha1.IngressCommonRule{FromEndpoints: from}, ToPorts: []v1alpha1.PortRule{ports}}},
			},
		}
	}
	return l.createPolicies(ctx, l7BenchNS,
		policy("payment-l7", "l7", v1alpha1.PortRule{Ports: []v1alpha1.PortProtocol{tcp(l7AppPort)}, Rules: &v1alpha1.L7Rules{HTTP: api}}),
		policy("payment-plain", "plain", v1alpha1.PortRule{Ports: []v1alpha1.PortProtocol{tcp(l7AppPort)}}),
		policy("payment-mesh", "mesh", v1alpha1.PortRule{Ports: []v1alpha1.PortProtocol{tcp(l7AppPort), tcp(l7ServerSidecarPort)}}),
	)
}

// createPolicies creates the policies ps in namespace ns.
func (l *l7Bench) createPolicies(ctx context.Context, ns string, ps ...*v1alpha1.MembraneNetworkPolicy) error {
	dyn, err := dynamicClient(l.c.state.Layout().Kubeconfig())
	if err != nil {
		return err
	}
	for _, p := range ps {
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
		if err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
		unstructured.RemoveNestedField(obj, "status")
		res := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("membranenetworkpolicies")).Namespace(ns)
		if _, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create policy %s: %w", p.Name, err)
		}
	}
	return nil
}

// waitEnforcing waits until node 2's agent enforces ingress policy on the
// three payment pods in namespace ns.
func (l *l7Bench) waitEnforcing(ctx context.Context, ns string) error {
	agents, err := agentClient(l.c.state.Layout().Kubeconfig())
	if err != nil {
		return err
	}
	return poll(ctx, 2*time.Minute, "node 2's agent enforcing the payment pods' policies", func() (bool, error) {
		if err := l.c.state.CheckProcesses(); err != nil {
			return false, err
		}
		var list agentapi.EndpointList
		get, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := agents.JSON(get, l.server.Name, http.MethodGet, agentapi.PathEndpoints, &list); err != nil {
			return false, nil
		}
		enforcing := 0
		for _, ep := range list.Endpoints {
			if ep.Namespace == ns && ep.State == agentapi.StateReady && ep.EnforceIngress && ep.Rules > 0 {
				enforcing++
			}
		}
		return enforcing == 3, nil
	})
}

// l7Report prints the measurements.
type l7Report struct {
	arms        []*l7Arm
	requests    int
	load        string
	sidecarLogs int64
	envoyBin    string
	sameBinary  bool
	took        time.Duration
	profiles    string
}

type l7Stats struct {
	n                  int
	p50, p90, p99, max time.Duration
	cgroupPer1k        []float64 // CPU-seconds per 1,000 requests, by cgroup
	cpuPer1k           float64   // their sum; NaN: no proxy
	softirqPer1k       float64   // the machine's softirq CPU-seconds per 1,000 requests
	watchedPer1k       float64   // node 2\'s agent\'s CPU-seconds per 1,000 requests
	envoyWatchedPer1k  float64   // node 2's Envoy's CPU-seconds per 1,000 requests
}

func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }

// totalCPUPer1k is an arm's cgroups plus its softirq excess over the
// direct arm's.
func (r *l7Report) totalCPUPer1k(s l7Stats) float64 {
	return s.cpuPer1k + max(0, s.softirqPer1k-r.arms[0].stats().softirqPer1k)
}

// l7Div is membrane's over the sidecar pair's; ok false when the sidecar
// pair's is not positive.
func l7Div(m, s float64) (float64, bool) {
	if s <= 0 {
		return 0, false
	}
	return m / s, true
}

// ratios are membrane's over the sidecar pair's: added p50, added p99,
// CPU per request.
func (r *l7Report) ratios() []l7Ratio {
	d, m, s := r.arms[0].stats(), r.arms[1].stats(), r.arms[2].stats()
	out := []l7Ratio{
		{name: "added p50", unit: "added-p50", m: float64(m.p50 - d.p50), s: float64(s.p50 - d.p50)},
		{name: "added p99", unit: "added-p99", m: float64(m.p99 - d.p99), s: float64(s.p99 - d.p99)},
		{name: "CPU per request", unit: "CPU", m: r.totalCPUPer1k(m), s: r.totalCPUPer1k(s)},
	}
	for i := range out {
		out[i].v, out[i].ok = l7Div(out[i].m, out[i].s)
	}
	return out
}

type l7Ratio struct {
	name, unit string
	m, s, v    float64
	ok         bool
}

var l7CPUNames = map[string][]string{
	l7ArmMembrane: {"node Envoy", "agent"},
	l7ArmSidecar:  {"server sidecar", "client sidecar"},
}

func (r *l7Report) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n== L7 policy: latency and CPU added by Membrane's node Envoy vs a sidecar pair ==\n")
	fmt.Fprintf(&sb, "One 2-node local cluster; echo-basic pods payment-l7, payment-plain and payment-mesh on node 2, client pods client and\n")
	fmt.Fprintf(&sb, "client-mesh on node 1; the load generator dials from a client pod's network namespace. GET %s, %d req/s, keep-alive\n", l7Path, l7Rate)
	fmt.Fprintf(&sb, "HTTP/1.1 over at most %d connections per arm; %d warm-up requests per arm, then %d rounds of ~%d requests per arm, arms taking turns.\n",
		l7Pool, l7Warmup, l7Rounds, (r.requests+l7Rounds-1)/l7Rounds)
	fmt.Fprintf(&sb, "  %-13s client to payment-plain:3000 (L3/L4 allow policy, no proxy)\n", l7ArmDirect+":")
	fmt.Fprintf(&sb, "  %-13s client to payment-l7:3000, L7 policy: tc redirect to node 2's Envoy (RBAC, access log to the agent)\n", l7ArmMembrane+":")
	fmt.Fprintf(&sb, "  %-13s client-mesh to payment-mesh:3000: nat OUTPUT REDIRECT to the client sidecar's :%d (original_dst, ORIGINAL_DST\n", l7ArmSidecar+":", l7ClientSidecarPort)
	fmt.Fprintf(&sb, "  %-13s cluster, SO_MARK %d let out), nat PREROUTING REDIRECT to the server sidecar's :%d (translate's listener and\n", "", l7SidecarMark, l7ServerSidecarPort)
	fmt.Fprintf(&sb, "  %-13s RBAC, access log to this process) to 127.0.0.1:3000\n", "")
	fmt.Fprintf(&sb, "Same RBAC: the server sidecar's HTTP connection manager equals the node Envoy's live one but for names.\n")
	same := "the node Envoy image's binary, byte for byte"
	if !r.sameBinary {
		same = "NOT the node Envoy image's binary"
	}
	fmt.Fprintf(&sb, "Sidecars run %s (%s).\n", r.envoyBin, same)
	fmt.Fprintf(&sb, "CPU: membrane = node 2's Envoy pod cgroup + node 2's agent pod cgroup; sidecar pair = the two sidecars' cgroups; each\n")
	fmt.Fprintf(&sb, "proxy arm + its excess of machine-wide softirq (/proc/stat, all processes, 10 ms ticks) over the direct arm's.\n\n")

	direct := r.arms[0].stats()
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "arm\trequests\tp50\tp90\tp99\tmax\tadded p50\tadded p99\tcgroups CPU-ms/1k\tsoftirq CPU-ms/1k\ttotal CPU-ms/1k\tagent CPU-ms/1k\tnode Envoy CPU-ms/1k\tRBAC allowed\t")
	for _, a := range r.arms {
		s := a.stats()
		added50, added99, cpu, total, rbac := "-", "-", "-", "-", "-"
		if a.name != l7ArmDirect {
			added50, added99 = us(s.p50-direct.p50), us(s.p99-direct.p99)
			var parts []string
			for i, c := range s.cgroupPer1k {
				parts = append(parts, fmt.Sprintf("%s %.0f", l7CPUNames[a.name][i], c*1000))
			}
			cpu = fmt.Sprintf("%.0f (%s)", s.cpuPer1k*1000, strings.Join(parts, " + "))
			total = fmt.Sprintf("%.0f", r.totalCPUPer1k(s)*1000)
			rbac = fmt.Sprintf("%.0f", a.rbacDelta)
		}
		name := a.name
		if a.truncated {
			name += " (60 s budget hit)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%.0f\t%.0f\t%s\t\n", name, s.n, us(s.p50), us(s.p90), us(s.p99), us(s.max),
			added50, added99, cpu, s.softirqPer1k*1000, total, s.watchedPer1k*1000, s.envoyWatchedPer1k*1000, rbac)
	}
	tw.Flush()
	fmt.Fprintln(&sb)
	for _, q := range r.ratios() {
		if !q.ok {
			fmt.Fprintf(&sb, "membrane / sidecar pair, %s: - (the sidecar pair's is not positive; target <= %.1f: not evaluated)\n", q.name, l7Target)
			continue
		}
		met := "met"
		if q.v > l7Target {
			met = "MISSED"
		}
		fmt.Fprintf(&sb, "membrane / sidecar pair, %s: %.3f (target <= %.1f: %s)\n", q.name, q.v, l7Target, met)
	}
	fmt.Fprintf(&sb, "\nProfiles (Envoy stats at the end, warm-up and every arm's requests included):\n%s", r.profiles)
	fmt.Fprintf(&sb, "\nNotes:\n")
	fmt.Fprintf(&sb, "- \"RBAC allowed\": the enforcing Envoy's rbac ingress allowed counter over the arm (warm-up included); every 200 of the arm passed it.\n")
	fmt.Fprintf(&sb, "- the server sidecar sent %d access-log entries to this process.\n", r.sidecarLogs)
	fmt.Fprintf(&sb, "- latency: from the request's write to the end of the response body, in the Go client; percentiles are nearest-rank over all rounds.\n")
	fmt.Fprintf(&sb, "- the agent's cgroup holds all its work during the arm, not only the access logs (\"agent CPU\": node 2's agent during each arm,\n")
	fmt.Fprintf(&sb, "  its baseline in the arms without the node Envoy); machine softirq includes other processes' traffic.\n")
	fmt.Fprintf(&sb, "- \"node Envoy CPU\": node 2's Envoy during each arm; in the arms that do not use it, its background (stats, xDS, timers).\n")
	fmt.Fprintf(&sb, "- load average before: %s; after: %s; whole benchmark %s\n", r.load, strings.TrimSpace(wgLoadAvg()), r.took.Round(time.Second))
	return sb.String()
}

func (r *l7Report) metrics(b *testing.B) {
	b.ReportMetric(0, "ns/op") // the run's wall time says nothing
	direct := r.arms[0].stats()
	for _, a := range r.arms {
		s := a.stats()
		unit := strings.ReplaceAll(a.name, " ", "-")
		b.ReportMetric(float64(s.p50.Microseconds()), unit+"-p50-µs")
		b.ReportMetric(float64(s.p99.Microseconds()), unit+"-p99-µs")
		if a.name != l7ArmDirect {
			b.ReportMetric(float64((s.p50 - direct.p50).Microseconds()), unit+"-added-p50-µs")
			b.ReportMetric(float64((s.p99 - direct.p99).Microseconds()), unit+"-added-p99-µs")
			b.ReportMetric(r.totalCPUPer1k(s), unit+"-CPUs/1k")
		}
	}
	for _, q := range r.ratios() {
		if q.ok {
			b.ReportMetric(q.v, "membrane/sidecar-"+q.unit)
		}
	}
}

// addBPF adds the BPF programs' work between two snapshots to the arm's.
func (a *l7Arm) addBPF(before, after dpSnapshot) {
	if a.bpf == nil {
		a.bpf = map[string]progStat{}
	}
	for name, st := range after.progs {
		b := before.progs[name]
		sum := a.bpf[name]
		sum.runtime += st.runtime - b.runtime
		sum.runs += st.runs - b.runs
		a.bpf[name] = sum
	}
}

// bpfPerRequest is the BPF programs' run time and runs per measured request.
func (a *l7Arm) bpfPerRequest() string {
	n := len(a.lat)
	if n == 0 || len(a.bpf) == 0 {
		return "-"
	}
	var total time.Duration
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(a.bpf)) {
		st := a.bpf[name]
		total += st.runtime
		parts = append(parts, fmt.Sprintf("%s %.1f runs %.2f µs", name, float64(st.runs)/float64(n), st.runtime.Seconds()*1e6/float64(n)))
	}
	return fmt.Sprintf("%.2f µs per request (%s)", total.Seconds()*1e6/float64(n), strings.Join(parts, ", "))
}

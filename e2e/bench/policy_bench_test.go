package bench

// BenchmarkPolicyChangeToEnforced: the time from a policy change (the API
// write) to its enforcement, the BPF policy map written for every affected
// endpoint on every node, at 100 endpoints x 250 rules.
//
// Two shapes, one 2-node cluster each: identities=100 (every pod its own
// identity: the agent resolves 100 endpoints, not 10) and identities=10.
// 100 busybox pods, 50 per node, labelled bench=policy and group=g<i%G>
// (G identities). One MembraneNetworkPolicy selects them all with 250
// ingress rules, split over its specs (the CRD takes 32 ingress rules per
// rule): 200 rules fromEndpoints group g<j%G> to TCP port 10000+j, 50 rules
// fromCIDR a /24 of their own to TCP port 20000+j. With the local host's
// implicit allow, every endpoint holds 251 policy map entries: 12,550 per
// node.
//
// The timed changes cycle through five kinds, each one JSON patch:
// "change" moves one fromEndpoints rule to a port not used before (its old
// entry goes, a new allow entry comes), "add-deny" adds an ingressDeny rule
// (one group, a new port: a deny entry on every endpoint), "remove-deny"
// removes it again (the entry must be gone everywhere), "add-l7" adds an
// ingress rule with an HTTP rule (one group, a new port: a redirect entry
// on every endpoint, once the node's proxy has the rule), "remove-l7"
// removes it again. The clock starts just before the patch call; the
// benchmark then looks up, every millisecond, the rule's exact map key
// (endpoint, ingress, the group's identity, TCP, port) of the endpoints in
// both nodes' pinned policy maps, opened once (see waitEnforced); the
// change is enforced when the last endpoint of the last node has (or no
// longer has) it. That is the end-to-end view (API write, watch, agent,
// map). The agents' own view is their
// membrane_policy_change_to_enforced_seconds histogram (from the agent
// seeing the change to the maps written), read before and after.
//
//	MEMBRANE_BENCH_POLICY_CHANGES=45   timed changes, rounded up to whole
//	                                   cycles (also bounded by 3 minutes)

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/agentclient"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

const (
	policyBenchCluster = "bench-policy"
	policyBenchPodCIDR = "10.238.0.0/16"
	policyBenchNS      = "bench-policy"
	policyBenchName    = "bench"

	policyEndpoints = 100
	// Pods go ten in a row to each node in turn.
	policyPodsInARow = 10
	policyPeerRules  = 200 // fromEndpoints rules: group g<j%10>, TCP 10000+j
	policyCIDRRules  = 50  // fromCIDR rules: 172.16.<k>.0/24, TCP 20000+j
	policyRules      = policyPeerRules + policyCIDRRules
	// The CRD's limit of ingress rules in one rule (spec or specs[i]).
	policyRulesPerSpec = 32
	// Timed changes move a rule to port policyChangePort+i.
	policyChangePort = 30000

	policyTarget      = 100 * time.Millisecond // p99, end to end
	policyAgentTarget = 10 * time.Millisecond  // p99, the agent's own view
	// p99, pod Ready -> its policy enforced.
	policyNewPodTarget = 500 * time.Millisecond
	policyNewPods      = 10
	// The new pods' enforcement is seen on this rule's entry (not one the
	// timed changes move).
	policyWitnessRule = policyPeerRules - 1
	// ingressDeny rules of the timed changes use policyDenyPort+i.
	policyDenyPort = 40000
	// L7 rules of the timed changes use policyL7Port+i; they are added to
	// the last spec, which has room (policyRules%policyRulesPerSpec rules).
	policyL7Port = 50000
	// policyKinds are the kinds of timed changes, in their order.
	policyKinds          = 5
	policyEnforceTimeout = 10 * time.Second // per change
	policyMeasureBudget  = 3 * time.Minute  // all changes
	policyChangeGap      = 200 * time.Millisecond
	policyPollInterval   = time.Millisecond
)

// The agents' histograms the benchmark reads, per node.
const (
	mChangeToEnforced = "membrane_policy_change_to_enforced_seconds"
	mRegeneration     = "membrane_policy_regeneration_seconds"
	// mProxyWait: endpoints waiting for the node Envoy to run new
	// redirected ports (the L7 changes).
	mProxyWait = "membrane_proxy_wait_seconds"
	// mRegenerationPhase is a vector by phase (regenerationPhases).
	mRegenerationPhase = "membrane_policy_regeneration_phase_seconds"
)

// regenerationPhases are the agent's regeneration phases, in their order.
func regenerationPhases() []string {
	return []string{"resolve", "ipcache", "discover", "proxy", "endpoints", "prune"}
}

func BenchmarkPolicyChangeToEnforced(b *testing.B) {
	for _, groups := range []int{100, 10} {
		b.Run(fmt.Sprintf("identities=%d", groups), func(b *testing.B) { benchPolicyChange(b, groups) })
	}
}

func benchPolicyChange(b *testing.B, groups int) {
	e := newEnv(b)
	changes := 45
	if v := os.Getenv("MEMBRANE_BENCH_POLICY_CHANGES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("MEMBRANE_BENCH_POLICY_CHANGES=%q: want >= 1", v)
		}
		changes = n
	}
	changes = (changes + policyKinds - 1) / policyKinds * policyKinds
	ctx := benchContext(b)
	begin := time.Now()
	load := strings.TrimSpace(wgLoadAvg())

	c := upCluster(ctx, b, e, policyBenchCluster, policyBenchPodCIDR, false)
	defer c.down()
	dyn, err := dynamicClient(c.state.Layout().Kubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	agents, err := agentClient(c.state.Layout().Kubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	p := &policyBench{
		b: b, c: c,
		policies: dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("membranenetworkpolicies")).Namespace(policyBenchNS),
		hc:       &http.Client{Timeout: 5 * time.Second},
		agents:   agents,
		groups:   groups,
	}
	if err := p.deploy(ctx); err != nil {
		b.Fatal(err)
	}
	if err := p.waitEndpoints(ctx); err != nil {
		b.Fatal(err)
	}
	for _, n := range p.nodes {
		m, err := bpfpolicy.OpenPinned(c.state.Layout().NodeAgentPinDir(n.name))
		if err != nil {
			b.Fatalf("node %s: %v", n.name, err)
		}
		defer m.Close()
		n.maps = m
	}

	pol, err := benchPolicy(groups)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := p.policies.Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create the policy: %v", err)
	}
	if err := p.waitProgrammed(ctx); err != nil {
		b.Fatal(err)
	}
	progress(b, "policy with %d rules programmed for %d endpoints on %d nodes in %s",
		policyRules, policyEndpoints, len(p.nodes), time.Since(start).Round(time.Millisecond))
	scale, err := p.scale()
	if err != nil {
		b.Fatal(err)
	}

	before, err := p.agentHistograms(ctx)
	if err != nil {
		b.Fatal(err)
	}
	samples, err := p.measure(ctx, changes)
	if err != nil {
		b.Fatal(err)
	}
	after, err := p.agentHistograms(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// The moved rules replaced their entries, the deny and L7 rules are
	// gone again: the scale is unchanged.
	if end, err := p.scale(); err != nil {
		b.Fatal(err)
	} else if len(samples)%policyKinds == 0 && !slices.Equal(end, scale) {
		b.Errorf("policy map entries per node: %v before the changes, %v after", scale, end)
	}
	newPods, err := p.measureNewPods(ctx, policyNewPods)
	if err != nil {
		b.Fatal(err)
	}
	p.report(samples, scale, before, after, load, time.Since(begin))
	p.reportNewPods(newPods)
}

// policyBench is the benchmark's cluster, workload and readers.
type policyBench struct {
	b        *testing.B
	c        *cluster
	policies dynamic.ResourceInterface
	hc       *http.Client
	agents   *agentclient.Client
	nodes    []*policyNode
	// groups: the pods' group labels, g0..g<groups-1>, one identity each.
	groups int
	// identities of the groups.
	identities []bpfpolicy.Identity
}

// policyNode is one node's endpoints and its pinned policy maps.
type policyNode struct {
	name, ip string
	maps     *bpfpolicy.Maps
	eps      []policyEndpoint
}

type policyEndpoint struct {
	pod   string
	group int
	id    bpfpolicy.EndpointID
}

// policySample is one timed change.
type policySample struct {
	kind     string          // change, add-deny, remove-deny, add-l7, remove-l7
	write    time.Duration   // the patch call
	nodes    []time.Duration // the node's last endpoint has the new entry
	enforced time.Duration   // the last node's
	// agents is what both agents' change-to-enforced histogram counted
	// from the change until just before the next one.
	agents *histogram
}

func policyPodName(i int) string    { return fmt.Sprintf("ep-%03d", i) }
func policyGroupLabel(g int) string { return "g" + strconv.Itoa(g) }

// dynamicClient is a dynamic client with the credentials read once (as in
// upCluster).
func dynamicClient(kubeconfig string) (dynamic.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	if err := rest.LoadTLSFiles(cfg); err != nil {
		return nil, fmt.Errorf("load credentials of %s: %w", kubeconfig, err)
	}
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = "", "", ""
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return c, nil
}

// agentClient reaches the agents of the cluster of kubeconfig through its
// API server.
func agentClient(kubeconfig string) (*agentclient.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	return agentclient.New(cfg, localcluster.AgentPort)
}

// deploy creates the namespace and the endpoint pods, ten in a row on each
// node in turn (so every group has pods on both), and waits until all run.
func (p *policyBench) deploy(ctx context.Context) error {
	start := time.Now()
	client := p.c.client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: policyBenchNS}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	nodes := p.c.state.Nodes
	for i := range policyEndpoints {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: policyPodName(i), Namespace: policyBenchNS,
				Labels: map[string]string{"bench": "policy", "group": policyGroupLabel(i % p.groups)},
			},
			Spec: corev1.PodSpec{
				NodeName:                      nodes[(i/policyPodsInARow)%len(nodes)].Name,
				TerminationGracePeriodSeconds: ptr.To(int64(1)),
				Containers: []corev1.Container{{
					Name:    "sleep",
					Image:   "busybox:1.36",
					Command: []string{"sleep", "3600"},
				}},
			},
		}
		if _, err := client.CoreV1().Pods(policyBenchNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", pod.Name, err)
		}
	}
	running := 0
	err := poll(ctx, 5*time.Minute, fmt.Sprintf("%d pods Running with an IP", policyEndpoints), func() (bool, error) {
		if err := p.c.state.CheckProcesses(); err != nil {
			return false, err
		}
		pods, err := client.CoreV1().Pods(policyBenchNS).List(ctx, metav1.ListOptions{LabelSelector: "bench=policy"})
		if err != nil {
			return false, nil
		}
		running = 0
		for _, pod := range pods.Items {
			if pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" {
				running++
			}
		}
		return running == policyEndpoints, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%d running)", err, running)
	}
	progress(p.b, "%d endpoint pods running in %s", policyEndpoints, time.Since(start).Round(time.Millisecond))
	return nil
}

// agentGet reads path of node n's agent API into out (through the API
// server, as the CLI does).
func (p *policyBench) agentGet(ctx context.Context, n localcluster.NodeState, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.agents.JSON(ctx, n.Name, http.MethodGet, path, out)
}

// benchEndpoints returns the benchmark's endpoints node n's agent lists.
func (p *policyBench) benchEndpoints(ctx context.Context, n localcluster.NodeState) ([]agentapi.EndpointEntry, error) {
	var list agentapi.EndpointList
	if err := p.agentGet(ctx, n, agentapi.PathEndpoints, &list); err != nil {
		return nil, err
	}
	var out []agentapi.EndpointEntry
	for _, ep := range list.Endpoints {
		if ep.Namespace == policyBenchNS {
			out = append(out, ep)
		}
	}
	return out, nil
}

// waitEndpoints waits until both agents have every local endpoint ready
// with an identity, then notes their endpoint IDs and the groups'
// identities.
func (p *policyBench) waitEndpoints(ctx context.Context) error {
	start := time.Now()
	lists := make([][]agentapi.EndpointEntry, len(p.c.state.Nodes))
	ready := 0
	err := poll(ctx, 3*time.Minute, "every endpoint ready with an identity on its node's agent", func() (bool, error) {
		if err := p.c.state.CheckProcesses(); err != nil {
			return false, err
		}
		ready = 0
		for i, n := range p.c.state.Nodes {
			eps, err := p.benchEndpoints(ctx, n)
			if err != nil {
				return false, nil
			}
			lists[i] = eps
			for _, ep := range eps {
				if ep.State == agentapi.StateReady && ep.Identity != 0 && ep.ID != 0 {
					ready++
				}
			}
		}
		return ready == policyEndpoints, nil
	})
	if err != nil {
		var notReady []string
		for _, eps := range lists {
			for _, ep := range eps {
				if ep.State != agentapi.StateReady || ep.Identity == 0 || ep.ID == 0 {
					notReady = append(notReady, fmt.Sprintf("%s (%s, identity %d, endpoint %d, %s)", ep.Pod, ep.State, ep.Identity, ep.ID, ep.Error))
				}
			}
		}
		return fmt.Errorf("%w (%d of %d ready; not ready: %s)", err, ready, policyEndpoints, strings.Join(notReady, ", "))
	}
	p.identities = make([]bpfpolicy.Identity, p.groups)
	for i, n := range p.c.state.Nodes {
		pn := &policyNode{name: n.Name, ip: n.IP}
		for _, ep := range lists[i] {
			g, err := strconv.Atoi(strings.TrimPrefix(ep.Pod, "ep-"))
			if err != nil {
				return fmt.Errorf("endpoint %s on %s: not a benchmark pod", ep.Pod, n.Name)
			}
			g %= p.groups
			id := bpfpolicy.Identity(ep.Identity)
			switch cur := p.identities[g]; {
			case cur == 0:
				p.identities[g] = id
			case cur != id:
				return fmt.Errorf("group %s has identities %d and %d", policyGroupLabel(g), cur, id)
			}
			pn.eps = append(pn.eps, policyEndpoint{pod: ep.Pod, group: g, id: bpfpolicy.EndpointID(ep.ID)})
		}
		p.nodes = append(p.nodes, pn)
	}
	seen := map[bpfpolicy.Identity]bool{}
	for g, id := range p.identities {
		if seen[id] {
			return fmt.Errorf("groups share identity %d (group %s)", id, policyGroupLabel(g))
		}
		seen[id] = true
	}
	progress(p.b, "agents: %d endpoints ready (%d, %d per node), %d identities, in %s",
		policyEndpoints, len(p.nodes[0].eps), len(p.nodes[len(p.nodes)-1].eps), len(seen), time.Since(start).Round(time.Millisecond))
	return nil
}

// benchPolicy is the policy: rule j is specs[j/32].ingress[j%32].
func benchPolicy(groups int) (*unstructured.Unstructured, error) {
	mnp := &v1alpha1.MembraneNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "MembraneNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: policyBenchName, Namespace: policyBenchNS},
	}
	for j := range policyRules {
		if j%policyRulesPerSpec == 0 {
			mnp.Specs = append(mnp.Specs, v1alpha1.Rule{
				EndpointSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"bench": "policy"}},
				Description:      fmt.Sprintf("benchmark rules %d..%d", j, min(j+policyRulesPerSpec, policyRules)-1),
			})
		}
		var r v1alpha1.IngressRule
		if j < policyPeerRules {
			r.FromEndpoints = []metav1.LabelSelector{{MatchLabels: map[string]string{"group": policyGroupLabel(j % groups)}}}
			r.ToPorts = tcpPort(10000 + j)
		} else {
			r.FromCIDR = []v1alpha1.CIDR{v1alpha1.CIDR(fmt.Sprintf("172.16.%d.0/24", j-policyPeerRules))}
			r.ToPorts = tcpPort(20000 + j)
		}
		spec := &mnp.Specs[len(mnp.Specs)-1]
		spec.Ingress = append(spec.Ingress, r)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(mnp)
	if err != nil {
		return nil, fmt.Errorf("policy to unstructured: %w", err)
	}
	unstructured.RemoveNestedField(obj, "status")
	return &unstructured.Unstructured{Object: obj}, nil
}

func tcpPort(port int) []v1alpha1.PortRule {
	return []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: strconv.Itoa(port), Protocol: v1alpha1.ProtoTCP}}}}
}

// peerKey is the map key of the fromEndpoints rule of group g on port for
// endpoint ep.
func (p *policyBench) peerKey(ep bpfpolicy.EndpointID, g int, port uint16) bpfpolicy.PolicyKey {
	return bpfpolicy.PolicyKey{EndpointID: ep, Direction: bpfpolicy.Ingress, RemoteIdentity: p.identities[g], Proto: bpfpolicy.TCP, Port: port}
}

// waitProgrammed waits until both agents report the policy's rules on
// every endpoint and every endpoint's map holds every fromEndpoints rule.
func (p *policyBench) waitProgrammed(ctx context.Context) error {
	missing := 0
	err := poll(ctx, 2*time.Minute, "the policy programmed on every endpoint", func() (bool, error) {
		if err := p.c.state.CheckProcesses(); err != nil {
			return false, err
		}
		missing = 0
		for _, n := range p.c.state.Nodes {
			eps, err := p.benchEndpoints(ctx, n)
			if err != nil {
				return false, nil
			}
			for _, ep := range eps {
				if ep.State != agentapi.StateReady || !ep.EnforceIngress || ep.Rules < policyRules {
					missing++
				}
			}
		}
		if missing > 0 {
			return false, nil
		}
		for _, n := range p.nodes {
			for _, ep := range n.eps {
				for j := range policyPeerRules {
					_, ok, err := n.maps.LookupPolicy(p.peerKey(ep.id, j%p.groups, uint16(10000+j)))
					if err != nil {
						return false, fmt.Errorf("node %s: %w", n.name, err)
					}
					if !ok {
						missing++
					}
				}
			}
		}
		return missing == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%d endpoints or entries missing)", err, missing)
	}
	return nil
}

// scale counts each node's policy map entries, and checks that every
// endpoint enforces ingress and holds an entry per rule.
func (p *policyBench) scale() ([]int, error) {
	var out []int
	for _, n := range p.nodes {
		d, err := n.maps.Dump()
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.name, err)
		}
		enforcing := map[bpfpolicy.EndpointID]bool{}
		for _, e := range d.Endpoints {
			enforcing[e.Endpoint.ID] = e.Endpoint.EnforceIngress
		}
		perEP := map[bpfpolicy.EndpointID]int{}
		for _, e := range d.Policy {
			if e.Key.Direction == bpfpolicy.Ingress {
				perEP[e.Key.EndpointID]++
			}
		}
		for _, ep := range n.eps {
			if !enforcing[ep.id] || perEP[ep.id] < policyRules {
				return nil, fmt.Errorf("node %s: endpoint %d (%s): enforcing ingress %v with %d ingress entries, want %d",
					n.name, ep.id, ep.pod, enforcing[ep.id], perEP[ep.id], policyRules)
			}
		}
		out = append(out, len(d.Policy))
	}
	return out, nil
}

// measure times up to `changes` changes (within policyMeasureBudget),
// cycling through change, add-deny, remove-deny, add-l7 and remove-l7.
func (p *policyBench) measure(ctx context.Context, changes int) ([]policySample, error) {
	var samples []policySample
	start := time.Now()
	var denyGroup, l7Group int
	var denyPort, l7Port uint16
	lastSpec := (policyRules - 1) / policyRulesPerSpec
	l7Index := policyRules - lastSpec*policyRulesPerSpec // the L7 rule's index in the last spec
	seen, err := p.agentChangeHistogram(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < changes && (i%policyKinds != 0 || time.Since(start) < policyMeasureBudget); i++ {
		var (
			kind, patch string
			g           int
			port        uint16
			want        bpfpolicy.Verdict // 0: the entry must be gone
		)
		switch i % policyKinds {
		case 0:
			j := (i / policyKinds) % policyPeerRules
			kind, g, port, want = "change", j%p.groups, uint16(policyChangePort+i), bpfpolicy.Allow
			patch = fmt.Sprintf(`[{"op":"replace","path":"/specs/%d/ingress/%d/toPorts/0/ports/0/port","value":"%d"}]`,
				j/policyRulesPerSpec, j%policyRulesPerSpec, port)
		case 1:
			denyGroup, denyPort = (i*7)%p.groups, uint16(policyDenyPort+i)
			kind, g, port, want = "add-deny", denyGroup, denyPort, bpfpolicy.Deny
			patch = fmt.Sprintf(`[{"op":"add","path":"/specs/0/ingressDeny","value":[{"fromEndpoints":[{"matchLabels":{"group":%q}}],"toPorts":[{"ports":[{"port":"%d","protocol":"TCP"}]}]}]}]`,
				policyGroupLabel(denyGroup), denyPort)
		case 2:
			kind, g, port = "remove-deny", denyGroup, denyPort
			patch = `[{"op":"remove","path":"/specs/0/ingressDeny"}]`
		case 3:
			l7Group, l7Port = (i*3)%p.groups, uint16(policyL7Port+i)
			kind, g, port, want = "add-l7", l7Group, l7Port, bpfpolicy.Redirect
			patch = fmt.Sprintf(`[{"op":"add","path":"/specs/%d/ingress/-","value":{"fromEndpoints":[{"matchLabels":{"group":%q}}],"toPorts":[{"ports":[{"port":"%d","protocol":"TCP"}],"rules":{"http":[{"method":"GET","path":"/bench"}]}}]}}]`,
				lastSpec, policyGroupLabel(l7Group), l7Port)
		case 4:
			kind, g, port = "remove-l7", l7Group, l7Port
			patch = fmt.Sprintf(`[{"op":"remove","path":"/specs/%d/ingress/%d"}]`, lastSpec, l7Index)
		}
		t0 := time.Now()
		if _, err := p.policies.Patch(ctx, policyBenchName, types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return nil, fmt.Errorf("change %d (%s): patch: %w", i, kind, err)
		}
		s := policySample{kind: kind, write: time.Since(t0)}
		done, err := p.waitEnforced(ctx, g, port, want)
		if err != nil {
			return nil, fmt.Errorf("change %d (%s, group %s, port %d): %w", i, kind, policyGroupLabel(g), port, err)
		}
		for _, d := range done {
			s.nodes = append(s.nodes, d.Sub(t0))
			s.enforced = max(s.enforced, d.Sub(t0))
		}
		var nodes []string
		for k, d := range s.nodes {
			nodes = append(nodes, fmt.Sprintf("%s %s", p.nodes[k].name, ms(d)))
		}
		progress(p.b, "change %d/%d: %s (group %s, port %d): write %s, enforced: %s; all %s",
			i+1, changes, kind, policyGroupLabel(g), port, ms(s.write), strings.Join(nodes, ", "), ms(s.enforced))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(policyChangeGap):
		}
		now, err := p.agentChangeHistogram(ctx)
		if err != nil {
			return nil, err
		}
		s.agents, seen = now.add(seen, -1), now
		samples = append(samples, s)
	}
	return samples, nil
}

// agentChangeHistogram reads the agents' change-to-enforced histogram,
// summed over nodes.
func (p *policyBench) agentChangeHistogram(ctx context.Context) (*histogram, error) {
	hs, err := p.agentHistograms(ctx)
	if err != nil {
		return nil, err
	}
	return hs[mChangeToEnforced], nil
}

// waitEnforced looks up the entry of group g's rule on port in the
// endpoints' maps, every policyPollInterval, until all have it with
// verdict want (want 0: until none has it); it returns when each node's
// last endpoint got there. A node's scan stops at its first endpoint not
// there yet and goes on from it at the next poll, so the benchmark does a
// few lookups per poll while the agents work, not one per endpoint (on 2
// cores, a hundred thousand lookups a second would take CPU from the
// agents it times).
func (p *policyBench) waitEnforced(ctx context.Context, g int, port uint16, want bpfpolicy.Verdict) ([]time.Time, error) {
	deadline := time.Now().Add(policyEnforceTimeout)
	pending := make([][]policyEndpoint, len(p.nodes))
	for k, n := range p.nodes {
		pending[k] = n.eps
	}
	done := make([]time.Time, len(p.nodes))
	for {
		left := 0
		for k, n := range p.nodes {
			if !done[k].IsZero() {
				continue
			}
			rest := pending[k]
			for len(rest) > 0 {
				ep := rest[0]
				e, ok, err := n.maps.LookupPolicy(p.peerKey(ep.id, g, port))
				if err != nil {
					return nil, fmt.Errorf("node %s: %w", n.name, err)
				}
				if ok && want != 0 && e.Verdict != want {
					return nil, fmt.Errorf("node %s: endpoint %d: entry %s, want %s", n.name, ep.id, e, want)
				}
				if ok != (want != 0) {
					break
				}
				rest = rest[1:]
			}
			pending[k] = rest
			if len(rest) == 0 {
				done[k] = time.Now()
			}
			left += len(rest)
		}
		if left == 0 {
			return done, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not enforced after %s: %d of %d endpoints not there yet", policyEnforceTimeout, left, policyEndpoints)
		}
		time.Sleep(policyPollInterval)
	}
}

// newPodSample is one new pod: when the benchmark saw it Ready and when
// its node's map had its policy, both from its creation.
type newPodSample struct {
	pod             string
	ready, enforced time.Duration
}

// measureNewPods creates n pods one after another, each selected by the
// policy with an existing group's identity, alternating nodes, and times
// each from creation to Ready (as a watch sees it) and to its policy
// enforced: its node's map has the entry of policyWitnessRule for an
// endpoint ID no other endpoint has (written with the rest of its entries,
// before its endpoint leaves the init identity).
func (p *policyBench) measureNewPods(ctx context.Context, n int) ([]newPodSample, error) {
	var out []newPodSample
	j := policyWitnessRule
	taken := map[string][]bpfpolicy.EndpointID{} // by node: the new pods' IDs
	for k := range n {
		node := p.nodes[k%len(p.nodes)]
		used := map[bpfpolicy.EndpointID]bool{}
		for _, ep := range node.eps {
			used[ep.id] = true
		}
		for _, id := range taken[node.name] {
			used[id] = true
		}
		var candidates []bpfpolicy.EndpointID
		for id := bpfpolicy.EndpointID(1); len(candidates) < 2*policyEndpoints; id++ {
			if !used[id] {
				candidates = append(candidates, id)
			}
		}
		g := j % p.groups
		key := func(id bpfpolicy.EndpointID) bpfpolicy.PolicyKey { return p.peerKey(id, g, uint16(10000+j)) }
		for _, id := range candidates {
			if _, ok, err := node.maps.LookupPolicy(key(id)); err != nil {
				return nil, fmt.Errorf("node %s: %w", node.name, err)
			} else if ok {
				return nil, fmt.Errorf("node %s: endpoint %d has the witness entry before the new pod", node.name, id)
			}
		}
		name := fmt.Sprintf("new-%02d", k)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: policyBenchNS,
				Labels: map[string]string{"bench": "policy", "group": policyGroupLabel(k % p.groups)},
			},
			Spec: corev1.PodSpec{
				NodeName:                      node.name,
				TerminationGracePeriodSeconds: ptr.To(int64(1)),
				Containers:                    []corev1.Container{{Name: "sleep", Image: "busybox:1.36", Command: []string{"sleep", "3600"}}},
			},
		}
		w, err := p.c.client.CoreV1().Pods(policyBenchNS).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
		if err != nil {
			return nil, fmt.Errorf("watch pod %s: %w", name, err)
		}
		t0 := time.Now()
		if _, err := p.c.client.CoreV1().Pods(policyBenchNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			w.Stop()
			return nil, fmt.Errorf("create pod %s: %w", name, err)
		}
		readyc := make(chan time.Time, 1)
		go func() {
			defer w.Stop()
			for ev := range w.ResultChan() {
				if po, ok := ev.Object.(*corev1.Pod); ok && podReady(po) {
					readyc <- time.Now()
					return
				}
			}
		}()
		var ready, enforced time.Time
		deadline := t0.Add(time.Minute)
		for ready.IsZero() || enforced.IsZero() {
			select {
			case r := <-readyc:
				ready = r
			default:
			}
			for _, id := range candidates {
				if !enforced.IsZero() {
					break
				}
				if _, ok, err := node.maps.LookupPolicy(key(id)); err != nil {
					w.Stop()
					return nil, fmt.Errorf("node %s: %w", node.name, err)
				} else if ok {
					enforced = time.Now()
					taken[node.name] = append(taken[node.name], id)
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				w.Stop()
				return nil, fmt.Errorf("pod %s: not Ready and enforced within a minute (ready %v, enforced %v)", name, !ready.IsZero(), !enforced.IsZero())
			}
			time.Sleep(policyPollInterval)
		}
		s := newPodSample{pod: name, ready: ready.Sub(t0), enforced: enforced.Sub(t0)}
		out = append(out, s)
		progress(p.b, "new pod %s on %s: Ready after %s, enforced after %s (Ready -> enforced %s)",
			name, node.name, ms(s.ready), ms(s.enforced), ms(s.enforced-s.ready))
	}
	return out, nil
}

func (p *policyBench) reportNewPods(samples []newPodSample) {
	if len(samples) == 0 {
		return
	}
	var afterReady, fromCreate, ready []time.Duration
	for _, s := range samples {
		afterReady = append(afterReady, max(s.enforced-s.ready, 0))
		fromCreate = append(fromCreate, s.enforced)
		ready = append(ready, s.ready)
	}
	slices.Sort(afterReady)
	slices.Sort(fromCreate)
	slices.Sort(ready)
	p99 := percentile(afterReady, 0.99)
	p.b.ReportMetric(msf(p99), "newpod-p99-ms")
	recordSummary(p.b, policyNewPodSummary(p99, len(samples)))
	p.b.Logf("  new pod -> enforced, %d pods: after Ready (0 when enforced before Ready) p50 %.1f ms p99 %.1f ms (target p99 <= %d ms: %s); from creation p50 %.1f ms p99 %.1f ms; creation -> Ready p50 %.1f ms p99 %.1f ms",
		len(samples), msf(percentile(afterReady, 0.5)), msf(p99), policyNewPodTarget.Milliseconds(), metOrMissed(p99 <= policyNewPodTarget),
		msf(percentile(fromCreate, 0.5)), msf(percentile(fromCreate, 0.99)), msf(percentile(ready, 0.5)), msf(percentile(ready, 0.99)))
}

// histogram is a Prometheus histogram's cumulative buckets, sum and count.
type histogram struct {
	le     []float64 // upper bounds, ascending, +Inf last
	counts []float64
	sum    float64
	count  float64
}

// agentHistograms reads the agents' policy histograms, summed over nodes.
func (p *policyBench) agentHistograms(ctx context.Context) (map[string]*histogram, error) {
	out := map[string]*histogram{}
	for _, n := range p.c.state.Nodes {
		series, err := p.agentMetrics(ctx, n)
		if err != nil {
			return nil, err
		}
		for _, name := range []string{mChangeToEnforced, mRegeneration, mProxyWait} {
			h, err := parseHistogram(series, name, "")
			if err != nil {
				return nil, fmt.Errorf("agent on %s: %w", n.Name, err)
			}
			out[name] = out[name].add(h, 1)
		}
		for _, phase := range regenerationPhases() {
			h, err := parseHistogram(series, mRegenerationPhase, `phase="`+phase+`"`)
			if err != nil {
				return nil, fmt.Errorf("agent on %s: %w", n.Name, err)
			}
			out[phase] = out[phase].add(h, 1)
		}
	}
	return out, nil
}

// agentMetrics reads node n's agent metrics: series (name with labels, as
// printed) to value.
func (p *policyBench) agentMetrics(ctx context.Context, n localcluster.NodeState) (map[string]float64, error) {
	return scrapeMetrics(ctx, p.hc, fmt.Sprintf("http://%s:%d/metrics", n.IP, localcluster.AgentPort), "agent metrics on "+n.Name)
}

// parseHistogram reads histogram name from series; labels (`phase="x"`,
// or "") picks one of a vector's.
func parseHistogram(series map[string]float64, name, labels string) (*histogram, error) {
	bucket, sum, count := name+`_bucket{le="`, name+"_sum", name+"_count"
	if labels != "" {
		bucket, sum, count = name+"_bucket{"+labels+`,le="`, name+"_sum{"+labels+"}", name+"_count{"+labels+"}"
		name += "{" + labels + "}"
	}
	h := &histogram{}
	type bucketCount struct{ le, n float64 }
	var bs []bucketCount
	for s, v := range series {
		rest, ok := strings.CutPrefix(s, bucket)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bucket %q: %w", name, s, err)
		}
		bs = append(bs, bucketCount{le, v})
	}
	if len(bs) == 0 {
		return nil, fmt.Errorf("no histogram %s", name)
	}
	slices.SortFunc(bs, func(a, b bucketCount) int { return cmp.Compare(a.le, b.le) })
	for _, bk := range bs {
		h.le, h.counts = append(h.le, bk.le), append(h.counts, bk.n)
	}
	h.sum, h.count = series[sum], series[count]
	return h, nil
}

// add returns h + sign*o (h nil: sign*o); both have the same buckets.
func (h *histogram) add(o *histogram, sign float64) *histogram {
	out := &histogram{le: slices.Clone(o.le), counts: make([]float64, len(o.counts))}
	for i := range o.counts {
		out.counts[i] = sign * o.counts[i]
		if h != nil && i < len(h.counts) {
			out.counts[i] += h.counts[i]
		}
	}
	out.sum, out.count = sign*o.sum, sign*o.count
	if h != nil {
		out.sum += h.sum
		out.count += h.count
	}
	return out
}

// within is how many observations were at most bound, when bound is one
// of the buckets' (ok false otherwise).
func (h *histogram) within(bound float64) (n float64, ok bool) {
	for i, le := range h.le {
		if math.Abs(le-bound) < 1e-9 {
			return h.counts[i], true
		}
	}
	return 0, false
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile does
// (linear within the bucket; the highest finite bound past it).
func (h *histogram) quantile(q float64) float64 {
	if h.count <= 0 {
		return math.NaN()
	}
	rank := q * h.count
	for i, c := range h.counts {
		if c < rank {
			continue
		}
		if math.IsInf(h.le[i], 1) {
			return h.le[max(i-1, 0)]
		}
		lo, below := 0.0, 0.0
		if i > 0 {
			lo, below = h.le[i-1], h.counts[i-1]
		}
		if c == below {
			return h.le[i]
		}
		return lo + (h.le[i]-lo)*(rank-below)/(c-below)
	}
	return h.le[len(h.le)-1]
}

// percentile is the nearest-rank percentile of sorted ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (p *policyBench) report(samples []policySample, scale []int, before, after map[string]*histogram, load string, took time.Duration) {
	b := p.b
	if len(samples) == 0 {
		b.Fatal("no change measured")
	}
	var all, writes []time.Duration
	perNode := make([][]time.Duration, len(p.nodes))
	perKind := map[string][]time.Duration{}
	for _, s := range samples {
		all = append(all, s.enforced)
		writes = append(writes, s.write)
		perKind[s.kind] = append(perKind[s.kind], s.enforced)
		for k, d := range s.nodes {
			perNode[k] = append(perNode[k], d)
		}
	}
	slices.Sort(all)
	slices.Sort(writes)
	p50, p99, worst := percentile(all, 0.50), percentile(all, 0.99), all[len(all)-1]
	b.ReportMetric(0, "ns/op") // the run's wall time says nothing
	b.ReportMetric(msf(p50), "p50-ms")
	b.ReportMetric(msf(p99), "p99-ms")

	// At most 10 lines: go test cuts a benchmark's log there.
	b.Logf("%d identities: policy change -> enforced on %d nodes, %d endpoints x %d rules, end to end (API write included): p50 %.1f ms p99 %.1f ms max %.1f ms over %d changes (nearest rank; target p99 <= %d ms: %s)",
		p.groups, len(p.nodes), policyEndpoints, policyRules, msf(p50), msf(p99), msf(worst), len(all), policyTarget.Milliseconds(), metOrMissed(p99 <= policyTarget))
	var kinds, agentKinds, nodes []string
	for _, kind := range []string{"change", "add-deny", "remove-deny", "add-l7", "remove-l7"} {
		ds := slices.Clone(perKind[kind])
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		kinds = append(kinds, fmt.Sprintf("%s p50 %.1f ms p99 %.1f ms (%d)", kind, msf(percentile(ds, 0.5)), msf(percentile(ds, 0.99)), len(ds)))
		var h *histogram
		for _, s := range samples {
			if s.kind == kind {
				h = h.add(s.agents, 1)
			}
		}
		if n, ok := h.within(policyAgentTarget.Seconds()); ok && h.count > 0 {
			agentKinds = append(agentKinds, fmt.Sprintf("%s ~p50 %.1f ms ~p99 %.1f ms, %.0f of %.0f within %d ms",
				kind, 1000*h.quantile(0.5), 1000*h.quantile(0.99), n, h.count, policyAgentTarget.Milliseconds()))
		}
	}
	b.Logf("  by kind: %s", strings.Join(kinds, "; "))
	b.Logf("  agents' own view by kind (every observation from the change until the next): %s", strings.Join(agentKinds, "; "))
	for k, n := range p.nodes {
		ds := slices.Clone(perNode[k])
		slices.Sort(ds)
		nodes = append(nodes, fmt.Sprintf("%s (%d endpoints, %d map entries) p50 %.1f ms p99 %.1f ms",
			n.name, len(n.eps), scale[k], msf(percentile(ds, 0.5)), msf(percentile(ds, 0.99))))
	}
	b.Logf("  by node, its last endpoint: %s", strings.Join(nodes, "; "))
	b.Logf("  the API write (JSON patch, call to return): p50 %.1f ms max %.1f ms; the benchmark looks up each endpoint's entry every %s",
		msf(percentile(writes, 0.5)), msf(writes[len(writes)-1]), policyPollInterval)
	c2e := after[mChangeToEnforced].add(before[mChangeToEnforced], -1)
	regen := after[mRegeneration].add(before[mRegeneration], -1)
	recordSummary(b, policySummary(p50, p99, len(all), c2e)...)
	if c2e.count > 0 && regen.count > 0 {
		a99 := c2e.quantile(0.99)
		b.ReportMetric(1000*a99, "agent-p99-ms")
		within := ""
		if n, ok := c2e.within(policyAgentTarget.Seconds()); ok {
			within = fmt.Sprintf("; %.0f of %.0f within %d ms (a bucket bound: exact)", n, c2e.count, policyAgentTarget.Milliseconds())
		}
		b.Logf("  agents' own view, both nodes (%s: from the agent seeing a change to the maps written; bucket estimate): p50 %.1f ms p99 %.1f ms over %.0f (target p99 <= %d ms: %s)%s",
			mChangeToEnforced, 1000*c2e.quantile(0.5), 1000*a99, c2e.count, policyAgentTarget.Milliseconds(), metOrMissed(a99 <= policyAgentTarget.Seconds()), within)
		var phases []string
		for _, phase := range regenerationPhases() {
			h := after[phase].add(before[phase], -1)
			phases = append(phases, fmt.Sprintf("%s %.2f/%.1f", phase, 1000*h.sum/max(h.count, 1), 1000*h.quantile(0.99)))
		}
		wait := after[mProxyWait].add(before[mProxyWait], -1)
		b.Logf("  %s: %.0f regenerations, mean %.1f ms, ~p50 %.1f ms ~p99 %.1f ms; by phase (%s), mean/~p99 ms: %s; waits for the node Envoy to run new redirected ports (%s): %.0f, ~p50 %.1f ms ~p99 %.1f ms",
			mRegeneration, regen.count, 1000*regen.sum/regen.count, 1000*regen.quantile(0.5), 1000*regen.quantile(0.99),
			mRegenerationPhase, strings.Join(phases, ", "), mProxyWait, wait.count, 1000*wait.quantile(0.5), 1000*wait.quantile(0.99))
	} else {
		b.Errorf("agents' histograms did not move during the changes (%s %.0f, %s %.0f)", mChangeToEnforced, c2e.count, mRegeneration, regen.count)
	}
	b.Logf("  load average before: %s; after: %s; whole benchmark %s", load, strings.TrimSpace(wgLoadAvg()), took.Round(time.Second))
}

func metOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
	"github.com/membrane-mesh/membrane/mesh/tproxy"
)

const (
	cleanupCluster   = "e2e-cleanup"
	cleanupNamespace = "cleanup"
)

// cleanupPods: a client and a backend on node 1, a backend on node 2, and
// an L7 policy on the backends.
func cleanupPods(n1, n2 string) string {
	backend := func(name, node string) string {
		return `---
apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: cleanup, labels: {app: backend}}
spec:
  nodeName: ` + node + `
  containers:
  - name: http-echo
    image: hashicorp/http-echo:1.0.0
    args: ["-text=` + helloText + `", "-listen=:8080"]
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
`
	}
	return `apiVersion: v1
kind: Namespace
metadata: {name: cleanup}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: cleanup, labels: {app: client}}
spec:
  nodeName: ` + n1 + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox:1.36
    command: ["/bin/sh", "-c", "sleep 3600"]
` + backend("backend-1", n1) + backend("backend-2", n2)
}

const cleanupPolicy = `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata: {name: backend-l7, namespace: cleanup}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http: [{method: GET}]
`

// TestNodeCleanup: on a cluster with WireGuard and an L7 policy, one node's
// agent is stopped (the node leaves the chart's DaemonSets) and
// `membrane-agent cleanup` runs in that node's namespace with the agent's
// flags. Nothing of Membrane's is left on the
// node (pins, tcx programs on pod interfaces and the uplink, cgroup programs, the proxy's
// nftables table, the WireGuard device, ip rules, the key, the Node
// annotations), the other node keeps its own, a second run is a no-op, and
// the node's pods reach pods on the other node by pod IP once no policy
// applies.
func TestNodeCleanup(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: cleanupCluster, Nodes: 2, PodCIDR: "10.247.0.0/16", ServiceCIDR: "10.97.0.0/16",
		Encryption: localcluster.EncryptionWireGuard,
	})
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	l := s.Layout()
	n1, n2 := s.Nodes[0].Name, s.Nodes[1].Name
	k.must(cleanupPods(n1, n2), "apply", "-f", "-")
	k.must("", "-n", cleanupNamespace, "wait", "--for=condition=Ready", "pod/client", "pod/backend-1", "pod/backend-2", "--timeout=90s")
	podIP := func(name string) string {
		return strings.TrimSpace(k.must("", "-n", cleanupNamespace, "get", "pod", name, "-o", "jsonpath={.status.podIP}"))
	}
	backend1, backend2 := podIP("backend-1"), podIP("backend-2")
	get := func(ip string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := k.run(ctx, "", "-n", cleanupNamespace, "exec", "client", "--", "timeout", "3", "wget", "-q", "-O-", "http://"+ip+":8080")
		if err != nil || !strings.Contains(out, helloText) {
			return fmt.Errorf("GET %s: %v: %s", ip, err, out)
		}
		return nil
	}
	eventually(t, 60*time.Second, "client on "+n1+" reaches backend-2 on "+n2+" through the tunnel", func() error { return get(backend2) })
	// The L7 policy in force on node 1: its proxy plumbing is in use.
	k.must(cleanupPolicy, "apply", "-f", "-")
	eventually(t, 60*time.Second, "client reaches backend-1 on "+n1+" through the L7 policy", func() error { return get(backend1) })

	node1 := nodeView{t: t, netns: l.NodeNetns(n1), pinDir: l.NodeBPFDir(n1), cgroup: filepath.Join(l.CgroupDir(s.CgroupRoot), n1)}
	before := node1.inventory()
	t.Logf("%s before cleanup: %s", n1, before)
	if len(before.pins) == 0 || before.tcx+before.tcFilters == 0 || before.uplinkTCX == 0 || before.cgroupProgs == 0 || !before.nftTable || !before.wgDevice || len(before.rules) == 0 {
		t.Fatalf("%s does not have the full datapath to clean up: %s", n1, before)
	}
	if a := k.node(n1).Annotations; a[wireguard.AnnotationPublicKey] == "" || a[agenttunnel.CertAnnotation] == "" {
		t.Fatalf("%s lacks the agent's annotations: %v", n1, a)
	}

	// Stop node 1's agent: without the label the chart's DaemonSets select
	// nodes by, node 1 runs no agent (nor Envoy) pod any more.
	agent, err := localcluster.AgentPod(t.Context(), mustClient(t, l), n1)
	if err != nil {
		t.Fatal(err)
	}
	agentCgroup := filepath.Join(l.CgroupDir(s.CgroupRoot), n1, "pods", string(agent.UID))
	k.must("", "label", "node", n1, "kubernetes.io/os-")
	eventually(t, 60*time.Second, "the agent pod on "+n1+" gone", func() error {
		if _, err := os.Stat(agentCgroup); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pod %s still has its cgroup %s (%v)", agent.Name, agentCgroup, err)
		}
		return nil
	})
	argv := cleanupArgv(l, s.CgroupRoot, n1)
	t.Logf("cleanup command: %s", strings.Join(argv, " "))

	start := time.Now()
	out := runInNode(t, node1.netns, argv)
	t.Logf("first cleanup (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	removed := countRemovals(out)
	if removed == 0 {
		t.Error("the first cleanup logged nothing it removed")
	}
	after := node1.inventory()
	t.Logf("%s after cleanup: %s", n1, after)
	if !after.clean() {
		t.Errorf("%s is not clean: %s", n1, after)
	}
	if _, err := os.Stat(filepath.Join(l.NodeAgentStateDir(n1), wireguard.KeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WireGuard key file of %s: %v", n1, err)
	}
	a := k.node(n1).Annotations
	for _, name := range []string{wireguard.AnnotationPublicKey, agenttunnel.CertAnnotation} {
		if _, ok := a[name]; ok {
			t.Errorf("%s still has annotation %s", n1, name)
		}
	}
	// The other node keeps its datapath.
	node2 := nodeView{t: t, netns: l.NodeNetns(n2), pinDir: l.NodeBPFDir(n2), cgroup: filepath.Join(l.CgroupDir(s.CgroupRoot), n2)}
	if other := node2.inventory(); len(other.pins) == 0 || other.tcx+other.tcFilters == 0 || other.uplinkTCX == 0 || other.cgroupProgs == 0 || !other.nftTable || !other.wgDevice {
		t.Errorf("%s lost part of its datapath: %s", n2, other)
	}

	out = runInNode(t, node1.netns, argv)
	if n := countRemovals(out); n != 0 {
		t.Errorf("the second cleanup removed %d things:\n%s", n, out)
	}

	// No policy, no agent, no socket LB on node 1: pod IPs over the
	// underlay (node 2 drops node 1 as a WireGuard peer once its key is
	// withdrawn).
	k.must("", "-n", cleanupNamespace, "delete", "membranenetworkpolicy", "backend-l7")
	eventually(t, 60*time.Second, "client on "+n1+" reaches backend-2 on "+n2+" by pod IP after cleanup", func() error { return get(backend2) })
	t.Logf("%d objects removed; %s's client reaches %s on %s again", removed, n1, backend2, n2)
}

// cleanupArgv is `membrane-agent cleanup` on node with the flags the
// chart gives the node's agent, its paths as they are on the machine, and
// the admin's kubeconfig for the Node annotations.
func cleanupArgv(l localcluster.Layout, cgroupRoot, node string) []string {
	return []string{
		filepath.Join(shared.binDir, "membrane-agent"), "cleanup",
		"--node-name=" + node,
		"--kubeconfig=" + l.Kubeconfig(),
		"--bpf-pin-dir=" + l.NodeAgentPinDir(node),
		"--cgroup-path=" + filepath.Join(l.CgroupDir(cgroupRoot), node),
		"--state-dir=" + l.NodeAgentStateDir(node),
		"--api-socket=" + l.AgentSocket(node),
		"--enable-encryption=true", "--encryption-type=" + localcluster.EncryptionWireGuard,
	}
}

// mustClient is a clientset for the cluster of layout l.
func mustClient(t *testing.T, l localcluster.Layout) kubernetes.Interface {
	t.Helper()
	c, err := localcluster.Client(l.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runInNode(t *testing.T, netnsPath string, argv []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath, "--"}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// countRemovals counts the log lines of objects removed.
func countRemovals(out string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		for _, verb := range []string{`msg="removed `, `msg="deleted `, `msg="detached `} {
			if strings.Contains(line, verb) {
				n++
			}
		}
	}
	return n
}

// nodeView reads what of Membrane's is on a node.
type nodeView struct {
	t      *testing.T
	netns  string
	pinDir string
	cgroup string
	// apiSocket is where the node's agent API socket is seen from the
	// host; empty: not checked.
	apiSocket string
	// cniConf is where the node's CNI configuration written by the agent
	// is seen from the host; empty: not checked.
	cniConf string
}

type inventory struct {
	pins        []string // below the pin dir
	tcx         int      // tcx programs on pod interfaces (mbr…)
	uplinkTCX   int      // tcx programs on the node's other interfaces (host routing on the uplink)
	tcFilters   int      // BPF clsact filters on pod interfaces
	podIfs      int
	cgroupProgs int // socket programs on the node's cgroup subtree
	nftTable    bool
	wgDevice    bool
	rules       []string // ip rules looking up our tables
	apiSocket   bool     // the agent API socket file exists
	cniConf     bool     // the agent's CNI configuration exists
}

func (i inventory) clean() bool {
	return len(i.pins) == 0 && i.tcx == 0 && i.uplinkTCX == 0 && i.tcFilters == 0 && i.cgroupProgs == 0 && !i.nftTable && !i.wgDevice && len(i.rules) == 0 && !i.apiSocket && !i.cniConf
}

func (i inventory) String() string {
	return fmt.Sprintf("%d pins %v, %d tcx programs and %d clsact filters on %d pod interfaces, %d tcx programs on other interfaces, %d cgroup socket programs, nftables table %s %v, %s %v, our ip rules %v, agent API socket %v, CNI configuration %v",
		len(i.pins), i.pins, i.tcx, i.tcFilters, i.podIfs, i.uplinkTCX, i.cgroupProgs, tproxy.TableName, i.nftTable, wireguard.DeviceName, i.wgDevice, i.rules, i.apiSocket, i.cniConf)
}

func (v nodeView) inventory() inventory {
	v.t.Helper()
	var inv inventory
	err := filepath.WalkDir(v.pinDir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err == nil && path != v.pinDir {
			inv.pins = append(inv.pins, strings.TrimPrefix(path, v.pinDir+"/"))
		}
		return err
	})
	if err != nil {
		v.t.Fatalf("walk %s: %v", v.pinDir, err)
	}
	if v.apiSocket != "" {
		_, err := os.Lstat(v.apiSocket)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			v.t.Fatal(err)
		}
		inv.apiSocket = err == nil
	}
	if v.cniConf != "" {
		_, err := os.Stat(v.cniConf)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			v.t.Fatal(err)
		}
		inv.cniConf = err == nil
	}
	socketHooks := []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP4Recvmsg, ebpf.AttachCgroupInet4GetPeername}
	err = filepath.WalkDir(v.cgroup, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, at := range socketHooks {
			res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
			if err != nil {
				return fmt.Errorf("query %s programs of %s: %w", at, path, err)
			}
			inv.cgroupProgs += len(res.Programs)
		}
		return nil
	})
	if err != nil {
		v.t.Fatal(err)
	}
	err = netns.Do(v.netns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			name := l.Attrs().Name
			if name == wireguard.DeviceName {
				inv.wgDevice = true
			}
			if !strings.HasPrefix(name, "mbr") {
				// The node's own interfaces: nothing of ours but host
				// routing's program on the uplink.
				res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
				if err == nil {
					inv.uplinkTCX += len(res.Programs)
				}
				continue
			}
			inv.podIfs++
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
				if err != nil {
					return fmt.Errorf("query tcx programs of %s: %w", name, err)
				}
				inv.tcx += len(res.Programs)
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				filters, err := netlink.FilterList(l, parent)
				if err != nil {
					continue // no clsact qdisc
				}
				for _, f := range filters {
					if _, ok := f.(*netlink.BpfFilter); ok {
						inv.tcFilters++
					}
				}
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Table == wireguard.RouteTable || r.Table == tproxy.DefaultTable {
				inv.rules = append(inv.rules, r.String())
			}
		}
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		_, err = conn.ListTableOfFamily(tproxy.TableName, nftables.TableFamilyIPv4)
		inv.nftTable = err == nil
		return nil
	})
	if err != nil {
		v.t.Fatalf("inspect %s: %v", v.netns, err)
	}
	return inv
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

const lifeNamespace = "life"

// latePod is a pod on node n without access to the backend.
func latePod(n string) string {
	return `apiVersion: v1
kind: Pod
metadata: {name: late, namespace: life, labels: {app: late}}
spec:
  nodeName: ` + n + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: late
    image: busybox:1.36
    command: ["/bin/sh", "-c", "sleep 3600"]
`
}

// lifePods: a client and a pod without access on node 1, a backend on
// node 2 behind Service backend, and a NetworkPolicy letting only the
// client reach the backend.
func lifePods(n1, n2 string) string {
	return `apiVersion: v1
kind: Namespace
metadata: {name: life}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: life}
spec:
  selector: {app: backend}
  ports:
  - {port: 8080, targetPort: http}
---
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: life, labels: {app: backend}}
spec:
  nodeName: ` + n2 + `
  containers:
  - name: http-echo
    image: hashicorp/http-echo:1.0.0
    args: ["-text=` + helloText + `", "-listen=:8080"]
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: life, labels: {app: client}}
spec:
  nodeName: ` + n1 + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox:1.36
    command: ["/bin/sh", "-c", "sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: life, labels: {app: other}}
spec:
  nodeName: ` + n1 + `
  terminationGracePeriodSeconds: 1
  containers:
  - name: other
    image: busybox:1.36
    command: ["/bin/sh", "-c", "sleep 3600"]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend, namespace: life}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: http}]
`
}

// life is the helm-installed cluster of TestHelmLifecycle.
type life struct {
	t          *testing.T
	k          *kube
	s          *localcluster.State
	name       string
	podIP, svc string // the backend's pod IP and the Service's cluster IP
}

func (c *life) in(t *testing.T) *life {
	d := *c
	d.t = t
	d.k = &kube{t: t, kubeconfig: c.k.kubeconfig, kubectlPath: c.k.kubectlPath}
	return &d
}

// helm runs the pinned helm on the cluster (localcluster.Helm: upgrade and
// install keep `dev up`'s values).
func (c *life) helm(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 6*time.Minute)
	defer cancel()
	out, err := localcluster.Helm(ctx, shared.toolsDir, c.name, args...)
	if err != nil {
		c.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// fetch makes one request from pod to url.
func (c *life) fetch(pod, url string) error {
	ctx, cancel := context.WithTimeout(c.t.Context(), 20*time.Second)
	defer cancel()
	out, err := c.k.run(ctx, "", "-n", lifeNamespace, "exec", pod, "--", "timeout", "3", "wget", "-q", "-O-", url)
	if err != nil || !strings.Contains(out, helloText) {
		return fmt.Errorf("%s -> %s: %v: %s", pod, url, err, out)
	}
	return nil
}

// works checks the client reaches the backend by pod IP and through the
// Service, and the other pod is denied by the policy.
func (c *life) works(what string) {
	c.t.Helper()
	for _, url := range []string{"http://" + c.podIP + ":8080/", "http://" + c.svc + ":8080/"} {
		eventually(c.t, 60*time.Second, what+": client -> "+url, func() error { return c.fetch("client", url) })
		eventually(c.t, 60*time.Second, what+": other -> "+url+" denied", func() error {
			if c.fetch("other", url) == nil {
				return fmt.Errorf("answered")
			}
			return nil
		})
	}
}

type lifeLoop struct{ podOK, podFailed, svcOK, svcFailed int }

func (r lifeLoop) String() string {
	return fmt.Sprintf("by pod IP %d ok / %d failed, through the Service %d ok / %d failed", r.podOK, r.podFailed, r.svcOK, r.svcFailed)
}

// loopTail is how long a request loop goes on after the change it
// watches: requests through the datapath the change left.
const loopTail = 5 * time.Second

// loop sends one request to the backend's pod IP and one through the
// Service every 100 ms from the client: from 2 s before during until
// loopTail after it returned, at most for d (and 600 rounds, 3 s timeout
// each). It returns the tally.
func (c *life) loop(d time.Duration, during func()) lifeLoop {
	c.t.Helper()
	type result struct {
		out string
		err error
		end time.Time
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
		defer cancel()
		script := fmt.Sprintf(`rm -f /tmp/stop; end=$(($(date +%%s)+%d)); i=0; po=0; pf=0; so=0; sf=0
while [ ! -e /tmp/stop ] && [ $i -lt 600 ] && [ $(date +%%s) -lt $end ]; do
  if timeout 3 wget -q -O- http://%s:8080 >/dev/null 2>&1; then po=$((po+1)); else pf=$((pf+1)); fi
  if timeout 3 wget -q -O- http://%s:8080 >/dev/null 2>&1; then so=$((so+1)); else sf=$((sf+1)); fi
  i=$((i+1)); sleep 0.1
done
echo $po $pf $so $sf`, int(d.Seconds()), c.podIP, c.svc)
		out, err := c.k.run(ctx, "", "-n", lifeNamespace, "exec", "client", "--", "sh", "-c", script)
		done <- result{out, err, time.Now()}
	}()
	time.Sleep(2 * time.Second)
	during()
	changed := time.Now()
	time.Sleep(loopTail)
	c.k.must("", "-n", lifeNamespace, "exec", "client", "--", "touch", "/tmp/stop")
	r := <-done
	var res lifeLoop
	if _, err := fmt.Sscanf(strings.TrimSpace(r.out), "%d %d %d %d", &res.podOK, &res.podFailed, &res.svcOK, &res.svcFailed); r.err != nil || err != nil {
		c.t.Fatalf("request loop: %v %v: %s", r.err, err, r.out)
	}
	if r.end.Before(changed.Add(loopTail)) {
		c.t.Errorf("the request loop ended (%s) before %s after the change (%s): it proves nothing about the datapath the change left", r.end, loopTail, changed)
	}
	if res.podOK+res.svcOK == 0 {
		c.t.Errorf("request loop: no request succeeded: %s", res)
	}
	return res
}

// node is what of Membrane's is on node n.
func (c *life) node(n string) inventory {
	l := c.s.Layout()
	return nodeView{t: c.t, netns: l.NodeNetns(n), pinDir: l.NodeBPFDir(n), cgroup: filepath.Join(l.CgroupDir(c.s.CgroupRoot), n),
		apiSocket: l.AgentSocket(n), cniConf: c.cniConf(n)}.inventory()
}

// cniConf is where the host sees node n's /etc/cni/net.d/05-membrane.conflist.
func (c *life) cniConf(n string) string {
	return filepath.Join(c.s.Layout().NodeHostDir(n), "etc/cni/net.d/05-membrane.conflist")
}

// checkCNIConf checks that the agent of node n installed the plugin and a
// configuration of the node's PodCIDR that reports to the agent's socket.
func (c *life) checkCNIConf(n string) {
	c.t.Helper()
	raw, err := os.ReadFile(c.cniConf(n))
	if err != nil {
		c.t.Fatalf("node %s's CNI configuration: %v", n, err)
	}
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type        string `json:"type"`
			PodCIDR     string `json:"podCIDR"`
			AgentSocket string `json:"agentSocket"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &conf); err != nil {
		c.t.Fatalf("node %s's CNI configuration: %v\n%s", n, err, raw)
	}
	cidr := strings.TrimSpace(c.k.must("", "get", "node", n, "-o", "jsonpath={.spec.podCIDR}"))
	if conf.Name != "membrane" || len(conf.Plugins) != 1 || conf.Plugins[0].Type != "membrane-cni" ||
		conf.Plugins[0].PodCIDR != cidr || conf.Plugins[0].AgentSocket != "/var/run/membrane/agent/api.sock" {
		c.t.Errorf("node %s's CNI configuration (PodCIDR %s):\n%s", n, cidr, raw)
	}
	if fi, err := os.Stat(filepath.Join(c.s.Layout().NodeHostDir(n), "opt/cni/bin/membrane-cni")); err != nil || fi.Mode()&0o111 == 0 {
		c.t.Errorf("node %s's /opt/cni/bin/membrane-cni: %v", n, err)
	}
}

// plaintext captures node's underlay while the client makes 5 requests to
// the backend's pod IP, and reports whether the reply's text was seen.
func (c *life) plaintext(node string) bool {
	c.t.Helper()
	pcap, _ := captureUnderlay(c.t, c.s, node, func() {
		for range 5 {
			if err := c.fetch("client", "http://"+c.podIP+":8080/"); err != nil {
				c.t.Error(err)
			}
		}
	})
	return bytes.Contains(pcap, []byte(helloText))
}

// workloadState is every workload pod's UID and restart count.
func (c *life) workloadState() string {
	return c.k.must("", "-n", lifeNamespace, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}`)
}

// agentsAvailable waits until the agent DaemonSet is rolled out.
func (c *life) agentsAvailable() {
	c.t.Helper()
	c.k.must("", "-n", "kube-system", "rollout", "status", "daemonset/membrane-agent", "--timeout=240s")
}

// TestHelmLifecycle: the chart's life cycle on a helm-installed cluster
// under traffic. WireGuard turned on and off by helm upgrade while requests
// flow; a rolling agent upgrade (another image tag) one node at a time with
// Services, policy and an established connection working; helm uninstall
// removing everything the agents programmed; and installs over the state a
// previous install left, and over another plugin's CNI configuration (set
// aside while Membrane is installed, renamed back by the uninstall).
func TestHelmLifecycle(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	name := "e2e-hl-" + strconv.Itoa(os.Getpid())
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	_ = localcluster.Down(ctx, log, name)
	start := time.Now()
	s, err := localcluster.Up(ctx, log, localcluster.Options{
		Name: name, Nodes: 2, PodCIDR: "10.243.0.0/16", ServiceCIDR: "10.93.0.0/16",
		ToolsDir: shared.toolsDir, BinDir: shared.binDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := localcluster.Down(context.Background(), log, name); err != nil {
			t.Errorf("down %s: %v", name, err)
		}
	})
	t.Logf("dev up: up in %s", time.Since(start).Round(time.Second))
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
	n1, n2 := s.Nodes[0].Name, s.Nodes[1].Name
	k.must(lifePods(n1, n2), "apply", "-f", "-")
	k.must("", "-n", lifeNamespace, "wait", "--for=condition=Ready", "pod/client", "pod/other", "pod/backend", "--timeout=120s")
	c := &life{t: t, k: k, s: s, name: name,
		podIP: strings.TrimSpace(k.must("", "-n", lifeNamespace, "get", "pod", "backend", "-o", "jsonpath={.status.podIP}")),
		svc:   strings.TrimSpace(k.must("", "-n", lifeNamespace, "get", "svc", "backend", "-o", "jsonpath={.spec.clusterIP}")),
	}
	c.works("installed")
	for _, n := range []string{n1, n2} {
		c.checkCNIConf(n)
	}

	t.Run("encryption on and off by helm upgrade under traffic", func(t *testing.T) {
		c := c.in(t)
		before := c.workloadState()
		var took time.Duration
		r := c.loop(60*time.Second, func() {
			start := time.Now()
			c.helm("upgrade", "--set", "encryption.enabled=true,encryption.type=wireguard")
			c.agentsAvailable()
			took = time.Since(start)
		})
		t.Logf("helm upgrade to WireGuard rolled out in %s; requests meanwhile: %s", took.Round(time.Second), r)
		if r.podFailed+r.svcFailed != 0 {
			t.Errorf("%d requests failed while turning WireGuard on", r.podFailed+r.svcFailed)
		}
		w := &wgEnv{t: t, k: c.k, s: c.s}
		w.converged(len(c.s.Nodes))
		for _, n := range []string{n1, n2} {
			if inv := c.node(n); !inv.wgDevice {
				t.Errorf("%s has no WireGuard device: %s", n, inv)
			}
		}
		if c.plaintext(n2) {
			t.Errorf("the reply's text crosses %s's underlay in plaintext with WireGuard on", n2)
		}
		if after := c.workloadState(); after != before {
			t.Errorf("workload pods restarted or replaced:\nbefore %s\nafter  %s", before, after)
		}
		c.works("WireGuard on")

		r = c.loop(60*time.Second, func() {
			start := time.Now()
			c.helm("upgrade", "--set", "encryption.enabled=false")
			c.agentsAvailable()
			took = time.Since(start)
		})
		t.Logf("helm upgrade to no encryption rolled out in %s; requests meanwhile: %s", took.Round(time.Second), r)
		if r.podFailed+r.svcFailed != 0 {
			t.Errorf("%d requests failed while turning WireGuard off", r.podFailed+r.svcFailed)
		}
		eventually(t, 60*time.Second, "no WireGuard device on any node", func() error {
			for _, n := range []string{n1, n2} {
				if inv := c.node(n); inv.wgDevice {
					return fmt.Errorf("%s: %s", n, inv)
				}
			}
			return nil
		})
		if !c.plaintext(n2) {
			t.Errorf("the reply's text is not seen on %s's underlay with WireGuard off", n2)
		}
		if after := c.workloadState(); after != before {
			t.Errorf("workload pods restarted or replaced:\nbefore %s\nafter  %s", before, after)
		}
		c.works("WireGuard off")
	})

	t.Run("rolling agent upgrade", func(t *testing.T) {
		c := c.in(t)
		var ds appsv1.DaemonSet
		mustJSON(t, c.k.must("", "-n", "kube-system", "get", "ds", "membrane-agent", "-o", "json"), &ds)
		if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "1" {
			t.Fatalf("agent DaemonSet update strategy %+v, want RollingUpdate with maxUnavailable 1", u)
		}
		oldImage := ds.Spec.Template.Spec.Containers[0].Image
		// Any tag of membrane/membrane-agent runs bin/'s binaries.
		const tag = "lifecycle"

		// A long-lived connection through the Service: one request a second
		// on one TCP connection for 80 s.
		const connRequests = 80
		type connResult struct {
			out string
			err error
		}
		conn := make(chan connResult, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			// One request a second until told to stop (after the rollout
			// and the request loop's tail), at most connRequests; then the
			// count of answers and of requests sent.
			script := fmt.Sprintf(`rm -f /tmp/conn-stop /tmp/conn-sent
(i=0; while [ $i -lt %d ] && [ ! -e /tmp/conn-stop ]; do printf 'GET / HTTP/1.1\r\nHost: backend\r\n\r\n'; sleep 1; i=$((i+1)); done; echo $i > /tmp/conn-sent) | timeout 100 nc %s 8080 | grep -c '%s'
cat /tmp/conn-sent`, connRequests, c.svc, helloText)
			out, err := c.k.run(ctx, "", "-n", lifeNamespace, "exec", "client", "--", "sh", "-c", script)
			conn <- connResult{out, err}
		}()

		// At most one agent pod unready at any time of the rollout.
		var mu sync.Mutex
		maxUnready, samples := 0, 0
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := c.k.run(ctx, "", "-n", "kube-system", "get", "pods", "-l", "k8s-app=membrane-agent", "-o", "json")
				cancel()
				if err != nil {
					continue
				}
				var pods corev1.PodList
				if json.Unmarshal([]byte(out), &pods) != nil {
					continue
				}
				ready := 0
				for _, p := range pods.Items {
					for _, cond := range p.Status.Conditions {
						if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
							ready++
						}
					}
				}
				mu.Lock()
				maxUnready = max(maxUnready, len(c.s.Nodes)-ready)
				samples++
				mu.Unlock()
			}
		}()
		before := c.workloadState()
		var took time.Duration
		r := c.loop(60*time.Second, func() {
			start := time.Now()
			c.helm("upgrade", "--set", "image.tag="+tag)
			c.agentsAvailable()
			took = time.Since(start)
		})
		close(stop)
		wg.Wait()
		c.k.must("", "-n", lifeNamespace, "exec", "client", "--", "touch", "/tmp/conn-stop")
		cr := <-conn
		t.Logf("rolling upgrade %s -> tag %s in %s; requests meanwhile: %s; at most %d agent pod(s) unready over %d samples",
			oldImage, tag, took.Round(time.Second), r, maxUnready, samples)
		if r.podFailed+r.svcFailed != 0 {
			t.Errorf("%d requests failed during the rolling upgrade", r.podFailed+r.svcFailed)
		}
		if maxUnready > 1 {
			t.Errorf("%d agent pods were unready at once, want at most 1", maxUnready)
		}
		if samples == 0 {
			t.Error("the agent pods were never sampled")
		}
		var got, sent int
		if _, err := fmt.Sscanf(strings.TrimSpace(cr.out), "%d\n%d", &got, &sent); err != nil {
			t.Errorf("long-lived connection: %v: %q (%v)", err, cr.out, cr.err)
		}
		t.Logf("long-lived connection: %d of %d responses on one connection", got, sent)
		if got != sent || sent == 0 {
			t.Errorf("the established connection answered %d of %d requests (%v)", got, sent, cr.err)
		}
		for _, p := range c.k.pods("kube-system", "k8s-app=membrane-agent") {
			if img := p.Spec.Containers[0].Image; !strings.HasSuffix(img, ":"+tag) {
				t.Errorf("agent pod %s runs %s, want tag %s", p.Name, img, tag)
			}
		}
		if after := c.workloadState(); after != before {
			t.Errorf("workload pods restarted or replaced:\nbefore %s\nafter  %s", before, after)
		}
		c.works("rolled")
	})

	t.Run("helm uninstall cleans every node", func(t *testing.T) {
		c := c.in(t)
		for _, n := range []string{n1, n2} {
			if inv := c.node(n); len(inv.pins) == 0 || inv.cgroupProgs == 0 || inv.tcx+inv.tcFilters == 0 || !inv.apiSocket || !inv.cniConf {
				t.Fatalf("%s does not have the datapath to clean up: %s", n, inv)
			}
		}
		start := time.Now()
		c.helm("uninstall", "membrane", "-n", "kube-system", "--wait", "--timeout", "5m")
		t.Logf("helm uninstall in %s", time.Since(start).Round(time.Second))
		for _, n := range []string{n1, n2} {
			if inv := c.node(n); !inv.clean() {
				t.Errorf("%s is not clean after helm uninstall: %s", n, inv)
			}
		}
		if out := c.k.must("", "-n", "kube-system", "get", "ds,job,pods", "-l", "app.kubernetes.io/name=membrane", "-o", "name"); strings.TrimSpace(out) != "" {
			t.Errorf("left in kube-system after uninstall:\n%s", out)
		}
		// No datapath: the client reaches the backend by pod IP over the
		// plain underlay, policy or not.
		eventually(t, 60*time.Second, "client reaches the backend by pod IP without Membrane", func() error {
			return c.fetch("client", "http://"+c.podIP+":8080/")
		})
		eventually(t, 60*time.Second, "other reaches the backend by pod IP without Membrane", func() error {
			return c.fetch("other", "http://"+c.podIP+":8080/")
		})
		// A new pod waits for a network: the node has no CNI
		// configuration until an agent writes one.
		c.k.must(latePod(n1), "apply", "-f", "-")
		eventually(t, 60*time.Second, "the late pod waits for the network", func() error {
			out := c.k.must("", "-n", lifeNamespace, "get", "events", "--field-selector", "involvedObject.name=late,reason=SetupFailed", "-o", "jsonpath={.items[*].message}")
			if !strings.Contains(out, "network plugin not ready: no CNI configuration in /etc/cni/net.d") {
				return fmt.Errorf("events of the late pod: %q", out)
			}
			return nil
		})
		if phase := c.k.must("", "-n", lifeNamespace, "get", "pod", "late", "-o", "jsonpath={.status.phase}"); phase != "Pending" {
			t.Errorf("the late pod is %s without a network", phase)
		}
	})

	t.Run("install over a clean cluster and over a previous install's state", func(t *testing.T) {
		c := c.in(t)
		// Another plugin's configuration, first in name order, whose
		// plugin the node does not have (an earlier CNI's leftover): the
		// runtime takes it for the waiting pod until the agent sets it
		// aside (cni.exclusive).
		other := filepath.Join(c.s.Layout().NodeHostDir(n1), "etc/cni/net.d/00-other.conflist")
		if err := os.WriteFile(other, []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"other-cni"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.helm("install")
		c.agentsAvailable()
		t.Logf("helm install after uninstall: agents available in %s", time.Since(start).Round(time.Second))
		c.works("installed again")
		// The agents wrote the configuration again and set the other one
		// aside; the pod that waited runs, policed like the others.
		c.checkCNIConf(n1)
		c.k.must("", "-n", lifeNamespace, "wait", "--for=condition=Ready", "pod/late", "--timeout=120s")
		if _, err := os.Stat(other); !os.IsNotExist(err) {
			t.Errorf("%s after the install: %v, want it set aside", other, err)
		}
		if _, err := os.Stat(other + ".membrane_bak"); err != nil {
			t.Errorf("the other configuration set aside: %v", err)
		}
		if err := c.fetch("late", "http://"+c.podIP+":8080/"); err == nil {
			t.Error("the late pod reached the backend the NetworkPolicy closes to it")
		}
		c.k.must("", "-n", lifeNamespace, "delete", "pod", "late", "--wait=true", "--timeout=60s")

		// An uninstall without the cleanup hooks leaves the datapath; the
		// agents are killed hard first, as a crashed node would leave them.
		for _, pid := range cgroupPIDs(t, c.s.Layout().CgroupDir(c.s.CgroupRoot), "membrane-agent") {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Logf("kill agent %d: %v", pid, err)
			}
		}
		c.helm("uninstall", "membrane", "-n", "kube-system", "--no-hooks", "--wait", "--timeout", "3m")
		left := map[string]inventory{}
		for _, n := range []string{n1, n2} {
			left[n] = c.node(n)
			if len(left[n].pins) == 0 {
				t.Fatalf("%s has no pins left after an uninstall without cleanup: %s", n, left[n])
			}
		}
		t.Logf("left by the uninstall without cleanup on %s: %s", n1, left[n1])
		start = time.Now()
		c.helm("install")
		c.agentsAvailable()
		t.Logf("helm install over the left state: agents available in %s", time.Since(start).Round(time.Second))
		c.works("installed over the left state")
		r := c.loop(10*time.Second, func() {})
		t.Logf("requests after the install over the left state: %s", r)
		if r.podFailed+r.svcFailed != 0 {
			t.Errorf("%d requests failed after the install over the left state", r.podFailed+r.svcFailed)
		}
		for _, n := range []string{n1, n2} {
			if inv := c.node(n); len(inv.pins) > 3*len(left[n].pins)+10 {
				t.Errorf("%s: pins grew from %d to %d: the new agent did not adopt the old ones: %s", n, len(left[n].pins), len(inv.pins), inv)
			}
		}
		// And the full uninstall cleans up what the adopting agents have,
		// and renames the other configuration back.
		c.helm("uninstall", "membrane", "-n", "kube-system", "--wait", "--timeout", "5m")
		for _, n := range []string{n1, n2} {
			if inv := c.node(n); !inv.clean() {
				t.Errorf("%s is not clean after the second helm uninstall: %s", n, inv)
			}
		}
		if _, err := os.Stat(other); err != nil {
			t.Errorf("the other configuration after the uninstall: %v, want it back", err)
		}
		if _, err := os.Stat(other + ".membrane_bak"); !os.IsNotExist(err) {
			t.Errorf("the other configuration's renamed copy after the uninstall: %v, want it gone", err)
		}
	})
}

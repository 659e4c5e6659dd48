package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// TestServiceLoadBalancing: with no kube-proxy anywhere, Services work
// through the eBPF socket load balancer, and cluster DNS through CoreDNS.
func TestServiceLoadBalancing(t *testing.T) {
	k := cluster(t)
	const ns = "lb"
	backends, frontends := deployTutorial(t, k, ns)
	fe := frontends[0]
	clusterIP := strings.TrimSpace(k.must("", "-n", ns, "get", "service", "backend", "-o", "jsonpath={.spec.clusterIP}"))
	exec := func(script string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		return k.run(ctx, "", "-n", ns, "exec", fe.Name, "--", "sh", "-c", script)
	}

	t.Run("DNS and ClusterIP, spread over both backends", func(t *testing.T) {
		// busybox's nslookup tries every search domain and exits 1 when
		// any of them is NXDOMAIN, so its answer is what counts.
		for _, name := range []string{"backend", "backend." + ns + ".svc.cluster.local"} {
			out, _ := exec("nslookup " + name)
			if !strings.Contains(out, "Name:\tbackend."+ns+".svc.cluster.local\nAddress: "+clusterIP) {
				t.Fatalf("nslookup %s: want %s\n%s", name, clusterIP, out)
			}
		}
		// The libc resolver (search domains, ndots:5) resolves every form.
		for _, name := range []string{"backend", "backend." + ns, "backend." + ns + ".svc.cluster.local"} {
			if out, err := exec("wget -q -O- http://" + name + ":8080"); err != nil || !strings.Contains(out, "Hello from Backend Service!") {
				t.Fatalf("wget http://%s:8080: %v\n%s", name, err, out)
			}
		}
		out, err := exec("for i in $(seq 20); do wget -q -O- http://backend:8080; done")
		if err != nil || strings.Count(out, "Hello from Backend Service!") != 20 {
			t.Fatalf("20 requests to http://backend:8080: %v\n%s", err, out)
		}
		for _, b := range backends {
			logs := k.must("", "-n", ns, "logs", b.Name)
			if !strings.Contains(logs, fe.Status.PodIP+":") {
				t.Errorf("backend %s served none of the 20 requests from %s", b.Name, fe.Status.PodIP)
			}
		}
		// The CLI shows the frontend on every node.
		var lists []agentapi.ServiceList
		mustJSON(t, k.membrane("service", "list", "-o", "json"), &lists)
		if len(lists) != 2 {
			t.Fatalf("service list from %d nodes, want 2", len(lists))
		}
		for _, l := range lists {
			found := false
			for _, s := range l.Services {
				if s.Frontend.Addr.String() == clusterIP && s.Frontend.Port == 8080 && len(s.Backends) == 2 {
					found = true
				}
			}
			if !found {
				t.Errorf("node %s: no frontend %s:8080 with 2 backends", l.Node, clusterIP)
			}
		}
	})

	t.Run("no backends: refused fast, then served again", func(t *testing.T) {
		k.must("", "-n", ns, "scale", "deployment/backend", "--replicas=0")
		eventually(t, 30*time.Second, "backends gone", func() error {
			if n := len(k.pods(ns, "app=backend")); n != 0 {
				return fmt.Errorf("%d backend pods left", n)
			}
			return nil
		})
		eventually(t, 10*time.Second, "connection refused", func() error {
			start := time.Now()
			out, err := exec("wget -q -O- http://backend:8080 2>&1; echo rc=$?")
			took := time.Since(start)
			if err != nil || !strings.Contains(out, "refused") || !strings.Contains(out, "rc=1") {
				return fmt.Errorf("want connection refused, got %v: %s", err, out)
			}
			t.Logf("refused in %s (kubectl exec round trip included)", took)
			return nil
		})
		k.must("", "-n", ns, "scale", "deployment/backend", "--replicas=2")
		k.must("", "-n", ns, "rollout", "status", "deployment/backend", "--timeout=90s")
		ready := time.Now()
		eventually(t, 2*time.Second, "served within 2 s of Ready", func() error {
			out, err := exec("wget -q -O- http://backend:8080")
			if err != nil || !strings.Contains(out, "Hello from Backend Service!") {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		t.Logf("served %s after the rollout was Ready", time.Since(ready).Round(time.Millisecond))
	})

	t.Run("agent restart loses no request", func(t *testing.T) {
		type result struct {
			out string
			err error
			end time.Time
		}
		done := make(chan result, 1)
		go func() {
			// Runs until told to stop (after the restarted agents are
			// healthy), bounded by count and by 90 seconds.
			out, err := exec("rm -f /tmp/stop; end=$(($(date +%s)+90)); ok=0; failed=0; i=0; while [ ! -e /tmp/stop ] && [ $i -lt 100000 ] && [ $(date +%s) -lt $end ]; do if wget -q -O- http://backend:8080 >/dev/null 2>&1; then ok=$((ok+1)); else failed=$((failed+1)); fi; i=$((i+1)); done; echo ok=$ok failed=$failed")
			done <- result{out, err, time.Now()}
		}()
		time.Sleep(time.Second)
		restartAgents(t, k)
		healthy := time.Now()
		time.Sleep(time.Second) // requests through the restarted agents' datapath
		if _, err := exec("touch /tmp/stop"); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.end.Before(healthy) {
			t.Fatalf("the request loop ended (%s) before the restarted agents were healthy (%s): it proves nothing", r.end, healthy)
		}
		var ok, failed int
		if _, err := fmt.Sscanf(strings.TrimSpace(r.out), "ok=%d failed=%d", &ok, &failed); r.err != nil || err != nil || ok == 0 || failed != 0 {
			t.Fatalf("request loop across agent restarts: %v: %s", r.err, r.out)
		}
		t.Logf("request loop across agent restarts: %d ok, %d failed", ok, failed)
	})

	t.Run("NodePort on every node IP from another node", func(t *testing.T) {
		k.must(`apiVersion: v1
kind: Service
metadata:
  name: backend-np
  namespace: `+ns+`
spec:
  type: NodePort
  selector: {app: backend}
  ports:
  - {port: 8080, targetPort: http}
`, "apply", "-f", "-")
		nodePort := strings.TrimSpace(k.must("", "-n", ns, "get", "service", "backend-np", "-o", "jsonpath={.spec.ports[0].nodePort}"))
		for _, n := range shared.cluster.Nodes {
			url := "http://" + n.IP + ":" + nodePort
			eventually(t, 10*time.Second, "NodePort "+url+" from "+fe.Spec.NodeName, func() error {
				out, err := exec("wget -q -O- " + url)
				if err != nil || !strings.Contains(out, "Hello from Backend Service!") {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		}
	})

	t.Run("bad input is skipped, nothing else changes", func(t *testing.T) {
		before := skippedCount(t, k, fe.Spec.NodeName)
		k.must(`apiVersion: v1
kind: Service
metadata:
  name: sctp-only
  namespace: `+ns+`
spec:
  ports:
  - {name: s, port: 9999, protocol: SCTP}
---
apiVersion: v1
kind: Service
metadata:
  name: bogus
  namespace: `+ns+`
spec:
  ports:
  - {name: http, port: 80}
  - {name: zero, port: 81}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bogus-1
  namespace: `+ns+`
  labels: {kubernetes.io/service-name: bogus}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
- {name: zero, port: 0, protocol: TCP}
endpoints:
- addresses: ["255.255.255.255"]
`, "apply", "-f", "-")
		eventually(t, 10*time.Second, "skipped input counted", func() error {
			if after := skippedCount(t, k, fe.Spec.NodeName); after < before+3 {
				return fmt.Errorf("membrane_agent_skipped_input_total went from %d to %d", before, after)
			}
			return nil
		})
		out, err := exec("wget -q -O- http://backend:8080")
		if err != nil || !strings.Contains(out, "Hello from Backend Service!") {
			t.Fatalf("backend after bad input: %v: %s", err, out)
		}
		st, err := localcluster.Load(sharedName)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.CheckProcesses(); err != nil {
			t.Fatal(err)
		}
	})
}

// skippedCount reads an agent's skipped-input counter through the API
// server's node proxy.
func skippedCount(t *testing.T, k *kube, node string) int {
	t.Helper()
	metrics := k.must("", "get", "--raw", "/api/v1/nodes/"+node+":9890/proxy/metrics")
	total := 0
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "membrane_agent_skipped_input_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

func mustJSON(t *testing.T, raw string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		t.Fatalf("decode %q: %v", raw[:min(len(raw), 200)], err)
	}
}

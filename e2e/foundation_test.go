package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestTutorialPair runs the tutorial pair on the shared cluster: real
// scheduling across both nodes, pod-to-pod traffic across nodes through the
// underlay, kubectl logs and exec through the API server, and a deleted pod
// replaced with its address released.
func TestTutorialPair(t *testing.T) {
	k := cluster(t)
	backends, frontends := deployTutorial(t, k, "tutorial")
	if len(backends) != 2 || len(frontends) != 2 {
		t.Fatalf("want 2 backends and 2 frontends, got %d and %d", len(backends), len(frontends))
	}
	nodes := map[string]bool{}
	for _, p := range append(append([]corev1.Pod{}, backends...), frontends...) {
		checkRunningInPodCIDR(t, k, p)
		nodes[p.Spec.NodeName] = true
	}
	if len(nodes) != 2 {
		t.Fatalf("pods landed on %d node(s), want both: %v", len(nodes), nodes)
	}

	t.Run("cross-node pod to pod", func(t *testing.T) {
		for _, fe := range frontends {
			var remote *corev1.Pod
			for i := range backends {
				if backends[i].Spec.NodeName != fe.Spec.NodeName {
					remote = &backends[i]
				}
			}
			if remote == nil {
				t.Fatalf("no backend on a node other than %s", fe.Spec.NodeName)
			}
			out := k.must("", "-n", "tutorial", "exec", fe.Name, "--", "timeout", "5", "wget", "-q", "-O-", "http://"+remote.Status.PodIP+":8080")
			if strings.TrimSpace(out) != "Hello from Backend Service!" {
				t.Fatalf("%s (%s) -> %s (%s): got %q", fe.Name, fe.Spec.NodeName, remote.Name, remote.Spec.NodeName, out)
			}
		}
	})

	t.Run("kubectl exec exit code and environment", func(t *testing.T) {
		fe := frontends[0]
		_, err := k.run(t.Context(), "", "-n", "tutorial", "exec", fe.Name, "--", "sh", "-c", "exit 7")
		if err == nil || !strings.Contains(err.Error(), "exit status 7") {
			t.Fatalf("want exit status 7 from kubectl exec, got %v", err)
		}
		out := k.must("", "-n", "tutorial", "exec", fe.Name, "--", "sh", "-c", "echo $BACKEND_URL; hostname; cat /etc/resolv.conf; ls /var/run/secrets/kubernetes.io/serviceaccount")
		for _, want := range []string{"http://backend:8080", fe.Name, "nameserver 10.96.0.10", "search tutorial.svc.cluster.local svc.cluster.local cluster.local", "options ndots:5", "token", "ca.crt", "namespace"} {
			if !strings.Contains(out, want) {
				t.Errorf("pod environment lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("kubectl logs", func(t *testing.T) {
		out := k.must("", "-n", "tutorial", "logs", backends[0].Name)
		if !strings.Contains(out, "server is listening on :8080") {
			t.Fatalf("http-echo log lacks its start line:\n%s", out)
		}
	})

	t.Run("deleted pod is replaced and its IP released", func(t *testing.T) {
		victim := backends[0]
		// The plugin's dataDir, /var/lib/membrane/cni on the node.
		ipFile := filepath.Join(shared.cluster.Layout().NodeHostDir(victim.Spec.NodeName), "var/lib/membrane/cni", victim.Status.PodIP)
		if _, err := os.Stat(ipFile); err != nil {
			t.Fatalf("IPAM holds no record for %s: %v", victim.Status.PodIP, err)
		}
		k.must("", "-n", "tutorial", "delete", "pod", victim.Name, "--wait=true", "--timeout=60s")
		eventually(t, 60*time.Second, "replacement backend Ready", func() error {
			pods := k.pods("tutorial", "app=backend")
			ready := 0
			for _, p := range pods {
				if p.Name == victim.Name {
					return fmt.Errorf("%s still listed", victim.Name)
				}
				if isReady(p) {
					ready++
				}
			}
			if ready != 2 {
				return fmt.Errorf("%d of 2 backends ready", ready)
			}
			return nil
		})
		if _, err := os.Stat(ipFile); !os.IsNotExist(err) {
			t.Fatalf("IP %s of the deleted pod is still allocated (%v)", victim.Status.PodIP, err)
		}
	})
}

func checkRunningInPodCIDR(t *testing.T, k *kube, p corev1.Pod) {
	t.Helper()
	if p.Status.Phase != corev1.PodRunning || !isReady(p) {
		t.Fatalf("pod %s: phase %s, ready %v", p.Name, p.Status.Phase, isReady(p))
	}
	n := k.node(p.Spec.NodeName)
	cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("node %s PodCIDR %q: %v", n.Name, n.Spec.PodCIDR, err)
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !cidr.Contains(ip) {
		t.Fatalf("pod %s IP %q is not in node %s's PodCIDR %s", p.Name, p.Status.PodIP, n.Name, cidr)
	}
}

func isReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

package e2e

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestHostRouting: traffic between pods of one node takes host routing
// (the node's host-routed packet counter grows with it), and the
// destination's ingress policy still drops what it denies, reporting the
// drop.
func TestHostRouting(t *testing.T) {
	k := cluster(t)
	const ns = "hostrouting"
	backends, frontends := deployTutorial(t, k, ns)
	var front, back *corev1.Pod
	for i := range frontends {
		for j := range backends {
			if front == nil && frontends[i].Spec.NodeName == backends[j].Spec.NodeName {
				front, back = &frontends[i], &backends[j]
			}
		}
	}
	if front == nil {
		t.Fatal("no frontend shares a node with a backend")
	}
	node := front.Spec.NodeName
	routed := func() float64 {
		return metricValue(k.must("", "get", "--raw", "/api/v1/nodes/"+node+":9890/proxy/metrics"), "membrane_datapath_host_routed_packets")
	}
	url := "http://" + back.Status.PodIP + ":8080/"
	expectReach(t, k, ns, []string{front.Name}, []string{url}, true)

	// The agent reads its datapath gauges when scraped, at most every 5 s:
	// let the value read after the reach check be a fresh one.
	time.Sleep(6 * time.Second)
	before := routed()
	const fetches = 5
	for range fetches {
		if err := fetch(k, ns, front.Name, url); err != nil {
			t.Fatalf("%s -> %s: %v", front.Name, url, err)
		}
	}
	// A fetch is at least SYN, SYN-ACK, the request, the answer and
	// three FINs or ACKs, each host routed.
	eventually(t, policyTimeout, "host-routed packets on "+node, func() error {
		if got := routed() - before; got < 5*fetches {
			return fmt.Errorf("%v packets host routed during %d fetches, want at least %d", got, fetches, 5*fetches)
		}
		return nil
	})
	t.Logf("%v packets host routed on %s", routed()-before, node)

	// Denied at the destination: no answer, and the drop is reported.
	isolateBackends(k, ns)
	expectReach(t, k, ns, []string{front.Name}, []string{url}, false)
	line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--namespace", ns, "--to-pod", ns + "/" + back.Name},
		ns+"/"+front.Name, ns+"/"+back.Name, ":8080", "Policy denied DROPPED", "SYN")
	t.Logf("drop: %s", line)
}

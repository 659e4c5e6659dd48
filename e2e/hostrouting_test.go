package e2e

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestHostRouting: traffic between pods of one node takes host routing
// (the node's host-routed packet counter grows with it), so does traffic
// from a pod of another node on the receiving node (its from-uplink
// counter grows), and the destination's ingress policy still drops what it
// denies, reporting the drop, in both cases.
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
	var xfront, xback *corev1.Pod // on different nodes
	for i := range frontends {
		for j := range backends {
			if xfront == nil && frontends[i].Spec.NodeName != backends[j].Spec.NodeName {
				xfront, xback = &frontends[i], &backends[j]
			}
		}
	}
	if xfront == nil {
		t.Fatal("no frontend on another node than a backend")
	}
	node := front.Spec.NodeName
	metric := func(node, name string) float64 {
		return metricValue(k.must("", "get", "--raw", "/api/v1/nodes/"+node+":9890/proxy/metrics"), name)
	}
	routed := func() float64 { return metric(node, "membrane_datapath_host_routed_packets") }
	url := "http://" + back.Status.PodIP + ":8080/"
	xurl := "http://" + xback.Status.PodIP + ":8080/"
	expectReach(t, k, ns, []string{front.Name}, []string{url}, true)
	expectReach(t, k, ns, []string{xfront.Name}, []string{xurl}, true)

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

	// From another node: host routed on the receiving node's uplink.
	xnode := xback.Spec.NodeName
	uplinkRouted := func() float64 { return metric(xnode, "membrane_datapath_host_routed_from_uplink_packets") }
	time.Sleep(6 * time.Second)
	xbefore := uplinkRouted()
	for range fetches {
		if err := fetch(k, ns, xfront.Name, xurl); err != nil {
			t.Fatalf("%s -> %s: %v", xfront.Name, xurl, err)
		}
	}
	// To the backend, a fetch is at least SYN, the request and two ACKs or FINs.
	eventually(t, policyTimeout, "packets from another node host routed on "+xnode, func() error {
		if got := uplinkRouted() - xbefore; got < 3*fetches {
			return fmt.Errorf("%v packets from other nodes host routed during %d fetches, want at least %d", got, fetches, 3*fetches)
		}
		return nil
	})
	t.Logf("%v packets from %s host routed on %s", uplinkRouted()-xbefore, xfront.Spec.NodeName, xnode)

	// Denied at the destination: no answer, and the drop is reported.
	isolateBackends(k, ns)
	expectReach(t, k, ns, []string{front.Name}, []string{url}, false)
	line := expectFlow(t, k, []string{"--verdict", "DROPPED", "--namespace", ns, "--to-pod", ns + "/" + back.Name},
		ns+"/"+front.Name, ns+"/"+back.Name, ":8080", "Policy denied DROPPED", "SYN")
	t.Logf("drop: %s", line)
	expectReach(t, k, ns, []string{xfront.Name}, []string{xurl}, false)
	line = expectFlow(t, k, []string{"--verdict", "DROPPED", "--namespace", ns, "--to-pod", ns + "/" + xback.Name},
		ns+"/"+xfront.Name, ns+"/"+xback.Name, ":8080", "Policy denied DROPPED", "SYN")
	t.Logf("drop from another node: %s", line)
}

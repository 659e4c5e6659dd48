package node

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// TestOwned checks that every Gateway address is announced by exactly one
// Ready node, and that a node leaving moves only its own addresses.
func TestOwned(t *testing.T) {
	var model ir.IR
	for i := range 20 {
		a := netip.AddrFrom4([4]byte{198, 18, 0, byte(200 + i)})
		model.Listeners = append(model.Listeners, ir.Listener{Address: a, Port: 80}, ir.Listener{Address: a, Port: 443})
	}
	node := func(name string, ready corev1.ConditionStatus) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
	}
	nodes := []corev1.Node{node("n1", "True"), node("n2", "True"), node("n3", "True"), node("n4", "False")}
	owners := func(nodes []corev1.Node) map[netip.Addr]string {
		out := map[netip.Addr]string{}
		for _, n := range nodes {
			for _, a := range Owned(model, nodes, n.Name) {
				if prev, ok := out[a]; ok {
					t.Errorf("%s announced by %s and %s", a, prev, n.Name)
				}
				out[a] = n.Name
			}
		}
		return out
	}
	before := owners(nodes)
	if len(before) != 20 {
		t.Fatalf("%d of 20 addresses announced: %v", len(before), before)
	}
	for a, n := range before {
		if n == "n4" {
			t.Errorf("%s announced by n4, which is not Ready", a)
		}
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if !slices.Contains(mapValues(before), n) {
			t.Errorf("node %s announces nothing: %v", n, before)
		}
	}
	after := owners(slices.Delete(slices.Clone(nodes), 2, 3)) // n3 leaves
	for a, n := range before {
		if n != "n3" && after[a] != n {
			t.Errorf("%s moved from %s to %s though %s stayed", a, n, after[a], n)
		}
		if after[a] == "" {
			t.Errorf("%s not announced after n3 left", a)
		}
	}
}

func mapValues(m map[netip.Addr]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

package flow

import "testing"

func TestMergeLast(t *testing.T) {
	a := []Flow{seqFlow(1), seqFlow(4), seqFlow(6)}
	b := []Flow{seqFlow(2), seqFlow(3), seqFlow(5), seqFlow(7)}
	same := seqFlow(4)
	same.Node = "b"
	for _, tc := range []struct {
		n    int
		want []int
	}{{0, []int{1, 2, 3, 4, 4, 5, 6, 7}}, {3, []int{5, 6, 7}}, {100, []int{1, 2, 3, 4, 4, 5, 6, 7}}} {
		got := MergeLast([][]Flow{a, append(b, same), nil}, tc.n)
		if !equalInts(seqs(got), tc.want) {
			t.Errorf("MergeLast(n=%d) = %v, want %v", tc.n, seqs(got), tc.want)
		}
	}
	// Equal times keep the lists' order.
	got := MergeLast([][]Flow{a, {same}}, 0)
	if got[1].Node != "" || got[2].Node != "b" {
		t.Errorf("equal times reordered: %+v", got[1:3])
	}
}

package agent

import (
	"testing"

	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// TestDatapathValuesAgree checks that every protocol the control plane and
// the socket load balancer both name converts to the datapath's value of
// the same meaning, and back.
func TestDatapathValuesAgree(t *testing.T) {
	for in, want := range map[model.Protocol]socklb.Proto{model.TCP: socklb.TCP, model.UDP: socklb.UDP} {
		if got := lbProto(in); got != want || got.String() != in.String() {
			t.Errorf("lbProto(%v) = %v, want %v", in, got, want)
		}
		if back := modelProto(want); back != in {
			t.Errorf("modelProto(%v) = %v, want %v", want, back, in)
		}
	}
}

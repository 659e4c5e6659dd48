package datapath

import (
	"testing"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// TestDatapathValuesAgree checks that every value the control plane and the
// policy datapath both name converts to the datapath's value of the same
// meaning.
func TestDatapathValuesAgree(t *testing.T) {
	for in, want := range map[model.Direction]bpfpolicy.Direction{model.Ingress: bpfpolicy.Ingress, model.Egress: bpfpolicy.Egress} {
		if got := bpfDirection(in); got != want || got.String() != in.String() {
			t.Errorf("bpfDirection(%v) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[model.Protocol]bpfpolicy.Proto{
		model.AnyProtocol: bpfpolicy.AnyProto, model.ICMP: bpfpolicy.ICMP, model.TCP: bpfpolicy.TCP,
		model.UDP: bpfpolicy.UDP, model.SCTP: bpfpolicy.SCTP,
	} {
		if got := bpfProto(in); got != want || got.String() != in.String() {
			t.Errorf("bpfProto(%v) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[model.Verdict]bpfpolicy.Verdict{model.Allow: bpfpolicy.Allow, model.Deny: bpfpolicy.Deny, model.Redirect: bpfpolicy.Redirect} {
		if got := bpfVerdict(in); got != want || got.String() != in.String() {
			t.Errorf("bpfVerdict(%v) = %v, want %v", in, got, want)
		}
	}
}

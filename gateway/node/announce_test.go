package node

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// TestAddresses checks that each listener address is announced once, in
// order.
func TestAddresses(t *testing.T) {
	a := netip.MustParseAddr("198.18.0.201")
	b := netip.MustParseAddr("198.18.0.200")
	model := ir.IR{Listeners: []ir.Listener{{Address: a, Port: 80}, {Address: b, Port: 80}, {Address: a, Port: 443}}}
	if got, want := Addresses(model), []netip.Addr{b, a}; !slices.Equal(got, want) {
		t.Fatalf("Addresses = %v, want %v", got, want)
	}
	if got := Addresses(ir.IR{}); len(got) != 0 {
		t.Fatalf("Addresses of no listeners = %v, want none", got)
	}
}

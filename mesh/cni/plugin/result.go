package plugin

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// newResult builds the ADD result. Like Cilium, the pod address is reported
// as a /32: the pod reaches everything, its neighbours included, through the
// gateway.
func newResult(pair veth.Pair, sandbox string, mtu int, ip netip.Addr) *current.Result {
	gw := net.IP(veth.Gateway().AsSlice())
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: pair.Host.Name, Mac: pair.Host.MAC.String(), Mtu: mtu},
			{Name: pair.Pod.Name, Mac: pair.Pod.MAC.String(), Mtu: mtu, Sandbox: sandbox},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(32, 32)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{
			Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW:  gw,
		}},
	}
}

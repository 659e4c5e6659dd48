package agentapi

import (
	"net"
	"net/netip"
	"strconv"
	"time"
)

// The dumps mirror the datapath's maps entry by entry. Their JSON keeps
// the Go field names the datapath's own dump types have.

// LBDump is every entry of the socket load balancer's service, backend and
// reverse-NAT maps, sorted.
type LBDump struct {
	Services []LBService
	Backends []LBBackendEntry
	RevNAT   []LBRevNATEntry
}

// LBService is one frontend as the maps hold it.
type LBService struct {
	Frontend LBFrontend
	Info     LBServiceInfo
	// Backends by slot (slot i+1 holds Backends[i]); 0 marks a missing slot.
	Backends []uint32
}

// LBFrontend is a service address; Scope 0 is the one the datapath looks up.
type LBFrontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
	Scope uint8
}

func (f LBFrontend) String() string {
	s := netip.AddrPortFrom(f.Addr, f.Port).String() + "/" + f.Proto.String()
	if f.Scope != 0 {
		s += "/scope=" + strconv.Itoa(int(f.Scope))
	}
	return s
}

// LBServiceInfo is a frontend's service entry.
type LBServiceInfo struct {
	RevNATID uint16
	// Flags: bit 0 session affinity, bit 1 node-local backends only.
	Flags           uint8
	AffinityTimeout time.Duration
}

// LBBackendEntry is one backend as the maps hold it.
type LBBackendEntry struct {
	ID      uint32
	Backend LBBackend
}

// LBBackend is where a translated socket goes.
type LBBackend struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

func (b LBBackend) String() string {
	return netip.AddrPortFrom(b.Addr, b.Port).String() + "/" + b.Proto.String()
}

// LBRevNATEntry is one reverse-NAT entry: the frontend address shown for
// replies.
type LBRevNATEntry struct {
	ID       uint16
	Frontend netip.AddrPort
}

// Proto is an IP protocol number.
type Proto uint8

func (p Proto) String() string {
	switch p {
	case 0:
		return "ANY"
	case 1:
		return "ICMP"
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// PolicyDump is every entry of the ipcache, endpoint and policy maps,
// sorted.
type PolicyDump struct {
	IPCache   []IPCacheEntry
	Endpoints []PolicyEndpointEntry
	Routes    []LocalRouteEntry
	Policy    []PolicyMapEntry
}

// LocalRouteEntry is how host routing reaches a local pod by its address.
type LocalRouteEntry struct {
	Addr  netip.Addr
	Route LocalRoute
}

// LocalRoute is a local pod's host-side interface and its link's Ethernet
// addresses.
type LocalRoute struct {
	Ifindex int
	PodMAC  net.HardwareAddr
	HostMAC net.HardwareAddr
}

// IPCacheEntry is one ipcache prefix and its security identity.
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity uint32
}

// PolicyEndpointEntry is one endpoint and its interface.
type PolicyEndpointEntry struct {
	Ifindex  int
	Endpoint PolicyEndpoint
}

// PolicyEndpoint is a local pod as the endpoint map holds it.
type PolicyEndpoint struct {
	ID             uint16
	Identity       uint32
	Addr           netip.Addr
	EnforceIngress bool
	EnforceEgress  bool
	// AuthEgress: not enforced at egress, but redirected to the
	// authenticating proxy where a destination requires it.
	AuthEgress bool
	// Pickup: TCP connections the endpoint had before policy applied to
	// it are still being taken up as established.
	Pickup bool
	// Track: enforces nothing, but tracked (it had connections through
	// the L7 proxy).
	Track bool
}

// PolicyMapEntry is one policy map entry: a port block shows as its range.
// DerivedDeny and DerivedAuth say the entry lies inside a deny or an
// authentication-requiring entry, which the datapath applies to it.
type PolicyMapEntry struct {
	Key         PolicyKey
	Entry       PolicyVerdict
	DerivedDeny bool
	DerivedAuth bool
}

// PolicyKey selects the flows a policy entry applies to. Direction 0 is
// ingress, 1 egress; RemoteIdentity 0 is every peer; Proto 0 with a port is
// TCP, UDP and SCTP.
type PolicyKey struct {
	EndpointID     uint16
	Direction      uint8
	RemoteIdentity uint32
	Proto          Proto
	Port           uint16
	EndPort        uint16
}

// PolicyVerdict is what happens to a new flow its key matches: Verdict 1
// allow, 2 deny, 3 redirect to the L7 proxy on ProxyPort.
type PolicyVerdict struct {
	Verdict      uint8
	ProxyPort    uint16
	AuthRequired bool
}

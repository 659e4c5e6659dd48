package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Identity is a security identity: reserved ones use Cilium's numbers, the
// operator allocates the others (from 256).
type Identity uint32

// Reserved identities.
const (
	// IdentityAny (0) in a policy key matches every peer. It is never the
	// identity of an address.
	IdentityAny           Identity = 0
	IdentityHost          Identity = 1
	IdentityWorld         Identity = 2 // also every address the ipcache does not know
	IdentityUnmanaged     Identity = 3
	IdentityHealth        Identity = 4
	IdentityInit          Identity = 5
	IdentityRemoteNode    Identity = 6
	IdentityKubeAPIServer Identity = 7
	IdentityIngress       Identity = 8
)

var reservedNames = map[Identity]string{
	IdentityAny:           "any",
	IdentityHost:          "reserved:host",
	IdentityWorld:         "reserved:world",
	IdentityUnmanaged:     "reserved:unmanaged",
	IdentityHealth:        "reserved:health",
	IdentityInit:          "reserved:init",
	IdentityRemoteNode:    "reserved:remote-node",
	IdentityKubeAPIServer: "reserved:kube-apiserver",
	IdentityIngress:       "reserved:ingress",
}

func (i Identity) String() string {
	if n, ok := reservedNames[i]; ok {
		return n
	}
	return strconv.FormatUint(uint64(i), 10)
}

// EndpointID names a local endpoint (pod) in policy keys; 0 is invalid. The
// agent allocates them.
type EndpointID uint16

// Direction is relative to the endpoint: Ingress is traffic to the pod
// (tcx egress of its host-side veth), Egress traffic from it (tcx ingress).
type Direction uint8

// Directions.
const (
	Ingress Direction = 0
	Egress  Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

func (d Direction) valid() bool { return d == Ingress || d == Egress }

// Proto is an IP protocol number.
type Proto uint8

// Protocols policy knows by name; any other number works too.
const (
	// AnyProto in a policy key: every protocol (an L3-only entry) or, with
	// a port, TCP, UDP and SCTP.
	AnyProto Proto = 0
	ICMP     Proto = 1
	TCP      Proto = 6
	UDP      Proto = 17
	SCTP     Proto = 132
)

func (p Proto) String() string {
	switch p {
	case AnyProto:
		return "ANY"
	case ICMP:
		return "ICMP"
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// Verdict is what a policy entry does with a new flow.
type Verdict uint8

// Verdicts; the numbers are the map's.
const (
	Allow    Verdict = Verdict(policyPolicyVerdictPOLICY_ALLOW)
	Deny     Verdict = Verdict(policyPolicyVerdictPOLICY_DENY)
	Redirect Verdict = Verdict(policyPolicyVerdictPOLICY_REDIRECT) // allow, through the L7 proxy on ProxyPort
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Redirect:
		return "redirect"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Marks (skb->mark) of the L7 redirect, Cilium's scheme: bits 8-11 hold the
// magic, bits 16-31 the proxy port. The programs (bpf/tc_policy.c) and the
// node's nft TPROXY rules use them.
const (
	MarkMagicMask = 0x0F00
	// MarkMagicToProxy: for the L7 proxy on the port in bits 16-31
	// (ToProxyMark). Packets to a pod are hairpinned back into the node's
	// stack with it.
	MarkMagicToProxy = 0x0200
	// MarkMagicFromProxy: sent by the L7 proxy (its upstream connections).
	// Policy still applies to them, but they are never redirected again.
	MarkMagicFromProxy = 0x0A00
)

// ToProxyMark is the mark of packets redirected to the L7 proxy on port.
func ToProxyMark(port uint16) uint32 { return uint32(port)<<16 | MarkMagicToProxy }

// PolicyKey selects the flows a policy entry applies to: new flows of one
// endpoint in one direction, from or to a remote identity, with a protocol
// and destination port.
type PolicyKey struct {
	EndpointID EndpointID
	Direction  Direction
	// RemoteIdentity is the peer: the source of ingress, the destination
	// of egress traffic. IdentityAny matches every peer.
	RemoteIdentity Identity
	// Proto AnyProto without a port is L3-only (every protocol and port);
	// AnyProto with a port means TCP, UDP and SCTP.
	Proto Proto
	// Port is the destination port (ICMP: the type); 0 is every port.
	// EndPort above Port makes the range Port..EndPort; 0 (or Port) is
	// Port alone.
	Port    uint16
	EndPort uint16
}

func (k PolicyKey) String() string {
	s := fmt.Sprintf("ep %d %s %s %s", k.EndpointID, k.Direction, k.RemoteIdentity, k.Proto)
	switch {
	case k.Port == 0:
	case k.EndPort > k.Port:
		s += fmt.Sprintf("/%d-%d", k.Port, k.EndPort)
	default:
		s += "/" + strconv.Itoa(int(k.Port))
	}
	return s
}

// PolicyEntry is what happens to a new flow its key matches.
type PolicyEntry struct {
	Verdict Verdict
	// ProxyPort is the L7 proxy's port, for Redirect (required) only.
	ProxyPort uint16
	// AuthRequired drops the flow ("Authentication required") until the
	// mutual-auth stage has authenticated the peers. Not with Deny.
	AuthRequired bool
}

func (e PolicyEntry) String() string {
	s := e.Verdict.String()
	if e.Verdict == Redirect {
		s += ":" + strconv.Itoa(int(e.ProxyPort))
	}
	if e.AuthRequired {
		s += "+auth"
	}
	return s
}

// Rule is one policy entry of an endpoint's policy (SetEndpointPolicy).
type Rule struct {
	Key   PolicyKey
	Entry PolicyEntry
}

// Endpoint is a local pod on a host-side interface.
type Endpoint struct {
	ID       EndpointID
	Identity Identity
	// Addr, when set, is the pod's IPv4 address: packets from the pod
	// with another source address are dropped ("Invalid source ip").
	Addr netip.Addr
	// EnforceIngress/EnforceEgress: in that direction, new flows need an
	// allow entry. Otherwise everything passes (still tracked and traced).
	// An endpoint with neither (and no AuthEgress) is untracked for TCP:
	// its packets pass with no conntrack work, and a connection is traced
	// by its SYN (UDP and the rest stay tracked).
	EnforceIngress bool
	EnforceEgress  bool
	// AuthEgress, without EnforceEgress: new flows from the pod are looked
	// up all the same, for the redirects to the proxy's authenticating
	// listener; a miss passes.
	AuthEgress bool
	// Pickup: TCP packets without SYN or RST that conntrack does not know
	// are taken as connections that opened while the endpoint was
	// untracked, and tracked from then on without a policy lookup. For a
	// while after an untracked endpoint becomes tracked (datapath.Writer),
	// so that policy changes spare its established connections.
	Pickup bool
	// Track keeps conntrack on for an endpoint that enforces nothing: its
	// connections redirected to the L7 proxy before keep going there
	// (datapath.Writer sets it for endpoints that had redirects).
	Track bool
}

// Tracked: conntrack tracks all of the endpoint's flows (policy applies to
// it in some direction, or Track).
func (ep Endpoint) Tracked() bool {
	return ep.EnforceIngress || ep.EnforceEgress || ep.AuthEgress || ep.Track
}

// ErrInvalid marks arguments the datapath cannot represent.
var ErrInvalid = errors.New("invalid policy datapath entry")

// ErrNotSupported: this Load or kernel cannot do what was asked.
var ErrNotSupported = errors.New("not supported by this policy datapath")

// Byte order: the kernel keeps addresses and ports in network order; the
// generated structs hold them as host integers whose in-memory bytes are
// those network-order bytes.

func addrToNet(a netip.Addr) (uint32, bool) {
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:]), true
}

func netToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func portToNet(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func netToPort(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

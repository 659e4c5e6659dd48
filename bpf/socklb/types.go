package socklb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
)

// Proto is an IP protocol number. Only TCP and UDP are load-balanced.
type Proto uint8

// Load-balanced protocols.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

func (p Proto) valid() bool { return p == TCP || p == UDP }

// Scope selects which table of a frontend a lookup uses.
type Scope uint8

const (
	// ScopeExternal is the scope the datapath looks up: every client.
	ScopeExternal Scope = 0
	// ScopeInternal is reserved for internalTrafficPolicy=Local (in-cluster
	// clients reaching node-local backends); the datapath does not look it up yet.
	ScopeInternal Scope = 1
)

// Frontend is a service address: what applications connect or send to.
type Frontend struct {
	Addr  netip.Addr // IPv4 (an IPv4-mapped IPv6 address is accepted)
	Port  uint16
	Proto Proto
	Scope Scope
}

func (f Frontend) String() string {
	s := netip.AddrPortFrom(f.Addr, f.Port).String() + "/" + f.Proto.String()
	if f.Scope != ScopeExternal {
		s += "/scope=" + strconv.Itoa(int(f.Scope))
	}
	return s
}

// ServiceFlags are per-service datapath options.
type ServiceFlags uint8

const (
	// FlagAffinity keeps a client (a network namespace) on the backend it
	// used last, while that backend stays in the service and the client
	// returns within AffinityTimeout (Kubernetes sessionAffinity: ClientIP).
	FlagAffinity ServiceFlags = 1 << 0
	// FlagLocalOnly is reserved for node-local backends only; not enforced yet.
	FlagLocalOnly ServiceFlags = 1 << 1

	knownFlags = FlagAffinity | FlagLocalOnly
)

// ServiceInfo is a frontend's service entry (slot 0).
type ServiceInfo struct {
	// RevNATID names the frontend in the reverse-NAT table. Each frontend
	// needs its own non-zero ID; the agent allocates them.
	RevNATID uint16
	Flags    ServiceFlags
	// AffinityTimeout, needed with FlagAffinity, is kept in whole seconds
	// (rounded up), between 1s and 2^32-1 s.
	AffinityTimeout time.Duration
}

// BackendID names a backend; 0 is invalid. The agent allocates them.
type BackendID uint32

// Backend is where a translated socket goes.
type Backend struct {
	Addr  netip.Addr // IPv4 (an IPv4-mapped IPv6 address is accepted)
	Port  uint16
	Proto Proto
}

func (b Backend) String() string {
	return netip.AddrPortFrom(b.Addr, b.Port).String() + "/" + b.Proto.String()
}

// Errors callers can test for with errors.Is.
var (
	// ErrInvalid marks arguments the datapath cannot represent.
	ErrInvalid = errors.New("invalid load-balancer entry")
	// ErrRevNATInUse means another live frontend holds the RevNATID.
	ErrRevNATInUse = errors.New("reverse-NAT ID used by another frontend")
)

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

// serviceKey is the key of slot `slot` of frontend f.
func (f Frontend) serviceKey(slot uint16) (socklbLb4Key, error) {
	addr, ok := addrToNet(f.Addr)
	switch {
	case !ok:
		return socklbLb4Key{}, fmt.Errorf("frontend %s: address must be IPv4: %w", f, ErrInvalid)
	case f.Port == 0:
		return socklbLb4Key{}, fmt.Errorf("frontend %s: port 0: %w", f, ErrInvalid)
	case !f.Proto.valid():
		return socklbLb4Key{}, fmt.Errorf("frontend %s: only TCP and UDP: %w", f, ErrInvalid)
	case f.Scope > ScopeInternal:
		return socklbLb4Key{}, fmt.Errorf("frontend %s: unknown scope: %w", f, ErrInvalid)
	}
	return socklbLb4Key{
		Address:     addr,
		Dport:       portToNet(f.Port),
		Proto:       uint8(f.Proto),
		Scope:       uint8(f.Scope),
		BackendSlot: slot,
	}, nil
}

func frontendFromKey(k socklbLb4Key) Frontend {
	return Frontend{
		Addr:  netToAddr(k.Address),
		Port:  netToPort(k.Dport),
		Proto: Proto(k.Proto),
		Scope: Scope(k.Scope),
	}
}

// sameAddrPort reports whether the reverse-NAT entry names f's address and port.
func (r socklbLb4ReverseNat) sameAddrPort(k socklbLb4Key) bool {
	return r.Address == k.Address && r.Port == k.Dport
}

func (i ServiceInfo) entry(count int) (socklbLb4Service, error) {
	if i.RevNATID == 0 {
		return socklbLb4Service{}, fmt.Errorf("rev-NAT ID 0: %w", ErrInvalid)
	}
	if i.Flags&^knownFlags != 0 {
		return socklbLb4Service{}, fmt.Errorf("unknown flags %#x: %w", uint8(i.Flags&^knownFlags), ErrInvalid)
	}
	var timeout uint32
	if i.Flags&FlagAffinity != 0 {
		secs := (i.AffinityTimeout + time.Second - 1) / time.Second
		if secs < 1 || secs > math.MaxUint32 {
			return socklbLb4Service{}, fmt.Errorf("affinity timeout %s out of range [1s, 2^32-1 s]: %w", i.AffinityTimeout, ErrInvalid)
		}
		timeout = uint32(secs)
	}
	return socklbLb4Service{
		BackendId: timeout, // slot 0: the union member affinity_timeout
		Count:     uint16(count),
		RevNatId:  i.RevNATID,
		Flags:     uint8(i.Flags),
	}, nil
}

func infoFromEntry(e socklbLb4Service) ServiceInfo {
	info := ServiceInfo{RevNATID: e.RevNatId, Flags: ServiceFlags(e.Flags)}
	if info.Flags&FlagAffinity != 0 {
		info.AffinityTimeout = time.Duration(e.BackendId) * time.Second
	}
	return info
}

func (b Backend) value() (socklbLb4Backend, error) {
	addr, ok := addrToNet(b.Addr)
	switch {
	case !ok:
		return socklbLb4Backend{}, fmt.Errorf("backend %s: address must be IPv4: %w", b, ErrInvalid)
	case b.Port == 0:
		return socklbLb4Backend{}, fmt.Errorf("backend %s: port 0: %w", b, ErrInvalid)
	case !b.Proto.valid():
		return socklbLb4Backend{}, fmt.Errorf("backend %s: only TCP and UDP: %w", b, ErrInvalid)
	}
	return socklbLb4Backend{Address: addr, Port: portToNet(b.Port), Proto: uint8(b.Proto)}, nil
}

func backendFromValue(v socklbLb4Backend) Backend {
	return Backend{Addr: netToAddr(v.Address), Port: netToPort(v.Port), Proto: Proto(v.Proto)}
}

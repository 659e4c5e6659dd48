// Package ipam hands out IPv4 addresses for pods from the node's PodCIDR.
//
// State lives only on disk, in one directory: one file per allocated address,
// named by the address and holding "containerID\nifname", created with
// O_CREAT|O_EXCL while holding an flock on the directory's lock file, plus a
// last_reserved_ip file so that allocation goes round-robin and an address
// that was just freed is not handed out again at once. A new Allocator on the
// same directory (a new plugin process, a restarted node) sees exactly the
// allocations that were made before.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

const (
	lockFileName         = "lock"
	lastReservedFileName = "last_reserved_ip"
)

// Owner identifies who holds an address: one interface of one container.
type Owner struct {
	ContainerID string
	IfName      string
}

func (o Owner) validate() error {
	if o.ContainerID == "" || o.IfName == "" {
		return errors.New("owner needs a container ID and an interface name")
	}
	if strings.ContainsAny(o.ContainerID, "\r\n") || strings.ContainsAny(o.IfName, "\r\n") {
		return errors.New("owner must not contain line breaks")
	}
	return nil
}

// Allocation is one address and who holds it.
type Allocation struct {
	IP    netip.Addr
	Owner Owner
}

// ExhaustedError says that every allocatable address of the range is taken.
type ExhaustedError struct {
	Prefix    netip.Prefix
	Allocated int
}

func (e *ExhaustedError) Error() string {
	noun := "addresses"
	if e.Allocated == 1 {
		noun = "address"
	}
	return fmt.Sprintf("no free IP in %s (%d %s allocated)", e.Prefix, e.Allocated, noun)
}

// Allocator allocates addresses of one IPv4 prefix, keeping its state in dir.
// The allocatable range skips the network address, the broadcast address and
// the first host address (.1), which is reserved for the node.
type Allocator struct {
	*Store
	prefix netip.Prefix
	first  uint32
	last   uint32
}

// New returns an Allocator for prefix with its state in dir. The directory is
// created on first use.
func New(dir string, prefix netip.Prefix) (*Allocator, error) {
	st, err := NewStore(dir)
	if err != nil {
		return nil, err
	}
	if !prefix.IsValid() || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("ipam: %s is not an IPv4 prefix", prefix)
	}
	prefix = prefix.Masked()
	if prefix.Bits() > 30 {
		return nil, fmt.Errorf("ipam: %s has no allocatable addresses (need /30 or larger)", prefix)
	}
	network := toUint32(prefix.Addr())
	broadcast := network | ^uint32(0)>>prefix.Bits()
	return &Allocator{Store: st, prefix: prefix, first: network + 2, last: broadcast - 1}, nil
}

// Prefix returns the range the Allocator hands out addresses from.
func (a *Allocator) Prefix() netip.Prefix { return a.prefix }

// Size returns how many addresses the range can hand out.
func (a *Allocator) Size() int { return int(a.last - a.first + 1) }

// Allocate returns the address held by owner, or reserves a free one for it.
// When no address is free it returns an *ExhaustedError.
func (a *Allocator) Allocate(ctx context.Context, owner Owner) (netip.Addr, error) {
	if err := owner.validate(); err != nil {
		return netip.Addr{}, fmt.Errorf("allocate: %w", err)
	}
	var ip netip.Addr
	err := a.locked(ctx, func(f files) error {
		all, err := f.list()
		if err != nil {
			return err
		}
		taken := make(map[netip.Addr]bool, len(all))
		for _, al := range all {
			if al.Owner == owner && a.contains(al.IP) {
				ip = al.IP
				return nil
			}
			if a.contains(al.IP) {
				taken[al.IP] = true
			}
		}
		start := a.first
		if lastIP, ok := f.lastReserved(); ok && a.contains(lastIP) {
			start = a.next(toUint32(lastIP))
		}
		cand := start
		for range a.Size() {
			addr := fromUint32(cand)
			if !taken[addr] {
				created, err := f.create(addr, owner)
				if err != nil {
					return err
				}
				if created {
					ip = addr
					return f.setLastReserved(addr)
				}
			}
			cand = a.next(cand)
		}
		return &ExhaustedError{Prefix: a.prefix, Allocated: len(taken)}
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate for %s/%s: %w", owner.ContainerID, owner.IfName, err)
	}
	return ip, nil
}

// Lookup returns the address of the range held by owner, if any.
func (a *Allocator) Lookup(ctx context.Context, owner Owner) (netip.Addr, bool, error) {
	all, err := a.List(ctx)
	if err != nil {
		return netip.Addr{}, false, err
	}
	for _, al := range all {
		if al.Owner == owner && a.contains(al.IP) {
			return al.IP, true, nil
		}
	}
	return netip.Addr{}, false, nil
}

func (a *Allocator) contains(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	v := toUint32(ip)
	return v >= a.first && v <= a.last
}

func (a *Allocator) next(v uint32) uint32 {
	if v >= a.last || v < a.first {
		return a.first
	}
	return v + 1
}

func toUint32(ip netip.Addr) uint32 {
	b := ip.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromUint32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

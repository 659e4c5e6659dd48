// Package hostlinks is the endpoint stage's netlink side: it finds the
// pods' host-side interfaces in the node's routes and links.
package hostlinks

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/nldump"
)

// linkTTL is how long a link seen is taken as it was (its name, whether
// it is a veth) before it is looked up again.
const linkTTL = time.Minute

// Netlink finds the pods' host-side veths: the interfaces of the node's
// /32 routes (main table) to pod addresses. It remembers the links the
// routes lead to, by index (a new link gets a new index), so most calls
// dump the routes only. Use New.
type Netlink struct {
	mu    sync.Mutex
	links map[int]link // by index
	now   func() time.Time
	// byIndex looks a link up; tests replace it.
	byIndex func(int) (netlink.Link, error)
}

type link struct {
	name string
	veth bool
	seen time.Time
}

// New returns a Netlink.
func New() *Netlink {
	return &Netlink{links: map[int]link{}, now: time.Now, byIndex: netlink.LinkByIndex}
}

// HostInterfaces implements endpoint.Links.
func (n *Netlink) HostInterfaces() (map[netip.Addr]endpoint.Interface, error) {
	routes, err := nldump.Retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	used := map[int]bool{}
	out := map[netip.Addr]endpoint.Interface{}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == 0 {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok {
			continue
		}
		l, err := n.link(r.LinkIndex, now)
		switch {
		case errors.As(err, new(netlink.LinkNotFoundError)):
			continue // gone since the routes were listed
		case err != nil:
			return nil, fmt.Errorf("look up link %d: %w", r.LinkIndex, err)
		}
		used[r.LinkIndex] = true
		if l.veth {
			out[ip] = endpoint.Interface{Index: r.LinkIndex, Name: l.name}
		}
	}
	// Links no route leads to any more are forgotten.
	for i := range n.links {
		if !used[i] {
			delete(n.links, i)
		}
	}
	return out, nil
}

// link returns the link of index, as remembered when seen within linkTTL.
func (n *Netlink) link(index int, now time.Time) (link, error) {
	if l, ok := n.links[index]; ok && now.Sub(l.seen) < linkTTL {
		return l, nil
	}
	nl, err := n.byIndex(index)
	if err != nil {
		return link{}, err
	}
	l := link{name: nl.Attrs().Name, veth: nl.Type() == "veth", seen: now}
	n.links[index] = l
	return l, nil
}

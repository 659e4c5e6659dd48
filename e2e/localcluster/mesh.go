package localcluster

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/nldump"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Cluster mesh between local clusters: their underlays are joined as two
// sites' networks would be. A veth pair connects the two bridges, and every
// namespace of each cluster (control plane and nodes) gets an on-link route
// to the other underlay's subnet, so nodes reach the other cluster's nodes
// and API server. Routes to the other cluster's pods are not set here: the
// agents own them (membrane clustermesh connect).

// meshLink names the veth pair that joins the underlays of a and b (the
// same whichever is named first).
func meshLink(a, b Layout) (string, string) {
	x, y := a.hash(), b.hash()
	if x > y {
		x, y = y, x
	}
	return "mbx" + x + y, "mby" + x + y
}

// Link joins the underlays of two running clusters (safe to repeat).
func Link(a, b string) error {
	if a == b {
		return fmt.Errorf("link %s to itself: name two clusters", a)
	}
	sa, err := Load(a)
	if err != nil {
		return err
	}
	sb, err := Load(b)
	if err != nil {
		return err
	}
	la, lb := sa.Layout(), sb.Layout()
	one, two := meshLink(la, lb)
	if _, err := netlink.LinkByName(one); err != nil {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: one}, PeerName: two}); err != nil {
			return fmt.Errorf("add veth %s: %w", one, err)
		}
	}
	first, second := la, lb // as meshLink sorted them
	if la.hash() > lb.hash() {
		first, second = lb, la
	}
	for _, end := range []struct{ link, bridge string }{{one, first.Bridge()}, {two, second.Bridge()}} {
		link, err := netlink.LinkByName(end.link)
		if err != nil {
			return fmt.Errorf("find %s: %w", end.link, err)
		}
		br, err := netlink.LinkByName(end.bridge)
		if err != nil {
			return fmt.Errorf("find bridge %s: %w", end.bridge, err)
		}
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", end.link, end.bridge, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", end.link, err)
		}
	}
	for _, p := range []struct {
		s     *State
		other Layout
	}{{sa, lb}, {sb, la}} {
		for _, ns := range namespaces(p.s) {
			if err := underlayRoute(ns, p.s.Layout(), p.other, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// Unlink separates the underlays of two clusters (safe to repeat; either
// may be gone already).
func Unlink(a, b string) error {
	var errs []error
	sa, erra := Load(a)
	sb, errb := Load(b)
	if erra == nil && errb == nil {
		for _, p := range []struct {
			s     *State
			other Layout
		}{{sa, sb.Layout()}, {sb, sa.Layout()}} {
			for _, ns := range namespaces(p.s) {
				if err := underlayRoute(ns, p.s.Layout(), p.other, false); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	one, _ := meshLink(Layout{Name: a}, Layout{Name: b})
	if err := deleteLink(one); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unlinkAll removes every veth that joins l's underlay to another's (down).
func unlinkAll(l Layout) error {
	links, err := nldump.Retry(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, link := range links {
		name := link.Attrs().Name
		if (strings.HasPrefix(name, "mbx") || strings.HasPrefix(name, "mby")) && len(name) == 15 &&
			(name[3:9] == l.hash() || name[9:15] == l.hash()) {
			if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func namespaces(s *State) []string {
	out := []string{s.Layout().ControlPlaneNetns()}
	for _, n := range s.Nodes {
		out = append(out, n.Netns)
	}
	return out
}

// underlayRoute adds (or removes) the on-link route to other's underlay
// subnet in namespace nsPath of cluster l.
func underlayRoute(nsPath string, l, other Layout, add bool) error {
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		if !add {
			return nil
		}
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	link, err := h.LinkByName(l.UnderlayIf())
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", l.UnderlayIf(), nsPath, err)
	}
	sub := other.Subnet()
	r := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: sub.Addr().AsSlice(), Mask: net.CIDRMask(sub.Bits(), 32)},
		Scope:     netlink.SCOPE_LINK,
	}
	if add {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s dev %s in %s: %w", sub, l.UnderlayIf(), nsPath, err)
		}
		return nil
	}
	if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s in %s: %w", sub, nsPath, err)
	}
	return nil
}

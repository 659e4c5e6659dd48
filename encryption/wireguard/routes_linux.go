package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/nldump"
	"golang.org/x/sys/unix"
)

// Routing. Other nodes' PodCIDRs already have underlay routes in the main
// table ("<podCIDR> via <nodeIP>", from whatever routes the underlay). The
// manager leaves those alone and instead owns one routing table, consulted
// by one policy rule before the main table:
//
//	ip rule:  pref RulePriority lookup RouteTable
//	table:    <peer PodCIDR> dev membrane_wg0                   (the tunnel)
//	          blackhole <peer PodCIDR> metric BlackholeMetric   (fail closed)
//
// Only PodCIDRs of configured peers are in the table, so a node without a
// key stays reachable over the underlay. If the device disappears (the
// embedded device dies with the agent), its routes go with it and the
// blackhole routes drop that traffic instead of sending it in plaintext.
// Turning encryption off (Remove) deletes the rule, the table and the
// device: the underlay routes are in force again.
const (
	RouteTable      = 51871
	RulePriority    = 1000
	BlackholeMetric = 4096
	// RouteProtocol marks the manager's routes ("membrane wireguard").
	RouteProtocol netlink.RouteProtocol = 78
)

// Router keeps the tunnel routes equal to the peers' allowed IPs.
type Router interface {
	// Sync makes the routes equal to prefixes; changed reports whether
	// anything had to be written.
	Sync(prefixes []netip.Prefix) (changed bool, err error)
	// Remove deletes the rule and every route of the table.
	Remove() error
}

// netlinkRouter is the Router of the current network namespace.
type netlinkRouter struct {
	h      *netlink.Handle
	device string
}

func newNetlinkRouter(device string) (*netlinkRouter, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &netlinkRouter{h: h, device: device}, nil
}

func (r *netlinkRouter) Close() { r.h.Close() }

func (r *netlinkRouter) Sync(prefixes []netip.Prefix) (bool, error) {
	changed, err := r.ensureRule()
	if err != nil {
		return changed, err
	}
	link, err := r.h.LinkByName(r.device)
	if err != nil {
		return changed, fmt.Errorf("find %s: %w", r.device, err)
	}
	have, err := r.list()
	if err != nil {
		return changed, err
	}
	want := map[string]*netlink.Route{}
	for _, p := range prefixes {
		dst := ipNet(p)
		want[routeKey(dst, false)] = &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Table: RouteTable, Protocol: RouteProtocol, Scope: netlink.SCOPE_LINK}
		want[routeKey(dst, true)] = &netlink.Route{Dst: dst, Table: RouteTable, Protocol: RouteProtocol, Type: unix.RTN_BLACKHOLE, Priority: BlackholeMetric}
	}
	var errs []error
	seen := map[string]bool{}
	for _, h := range have {
		k := routeKey(h.Dst, h.Type == unix.RTN_BLACKHOLE)
		w, ok := want[k]
		if ok && !seen[k] && (w.Type == unix.RTN_BLACKHOLE || h.LinkIndex == w.LinkIndex) {
			seen[k] = true
			continue
		}
		if err := r.h.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %s: %w", h.Dst, err))
		}
		changed = true
	}
	for k, w := range want {
		if seen[k] {
			continue
		}
		if err := r.h.RouteReplace(w); err != nil {
			errs = append(errs, fmt.Errorf("route %s in table %d: %w", w.Dst, RouteTable, err))
		}
		changed = true
	}
	return changed, errors.Join(errs...)
}

func (r *netlinkRouter) list() ([]netlink.Route, error) {
	routes, err := nldump.Retry(func() ([]netlink.Route, error) {
		return r.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: RouteTable}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", RouteTable, err)
	}
	return routes, nil
}

func (r *netlinkRouter) rules() ([]netlink.Rule, error) {
	rules, err := r.h.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: RouteTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return rules, nil
}

func (r *netlinkRouter) ensureRule() (bool, error) {
	rules, err := r.rules()
	if err != nil {
		return false, err
	}
	for _, rl := range rules {
		if rl.Priority == RulePriority && rl.Src == nil && rl.Dst == nil && rl.Mark == 0 {
			return false, nil
		}
	}
	rule := netlink.NewRule()
	rule.Family = netlink.FAMILY_V4
	rule.Table = RouteTable
	rule.Priority = RulePriority
	if err := r.h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add rule pref %d lookup %d: %w", RulePriority, RouteTable, err)
	}
	return true, nil
}

func (r *netlinkRouter) Remove() error {
	return r.remove(slog.New(slog.DiscardHandler))
}

// remove is Remove logging one line per rule and route it deletes.
func (r *netlinkRouter) remove(log *slog.Logger) error {
	var errs []error
	rules, err := r.rules()
	if err != nil {
		errs = append(errs, err)
	}
	for _, rl := range rules {
		if err := r.h.RuleDel(&rl); errors.Is(err, unix.ENOENT) {
			continue
		} else if err != nil {
			errs = append(errs, fmt.Errorf("delete rule lookup %d: %w", RouteTable, err))
			continue
		}
		log.Info("deleted ip rule", "priority", rl.Priority, "table", RouteTable)
	}
	routes, err := r.list()
	if err != nil {
		errs = append(errs, err)
	}
	for _, rt := range routes {
		if err := r.h.RouteDel(&rt); errors.Is(err, unix.ESRCH) {
			continue
		} else if err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rt.Dst, err))
			continue
		}
		log.Info("deleted route", "dst", rt.Dst, "blackhole", rt.Type == unix.RTN_BLACKHOLE, "table", RouteTable)
	}
	return errors.Join(errs...)
}

func routeKey(dst *net.IPNet, blackhole bool) string {
	if dst == nil {
		return "default"
	}
	if blackhole {
		return "blackhole " + dst.String()
	}
	return dst.String()
}

func ipNet(p netip.Prefix) *net.IPNet {
	n := prefixToIPNet(p.Masked())
	return &n
}

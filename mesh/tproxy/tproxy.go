package tproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/nldump"
	"golang.org/x/sys/unix"
)

// Install converges the calling thread's network namespace to the plumbing
// c describes: the route in c.Table, exactly one IPv4 rule looking c.Table
// up, and the nftables table TableName with its content replaced atomically.
// Calling it again with the same c changes nothing that matters; calling it
// with a changed c replaces the old state. A nil log discards.
func Install(ctx context.Context, log *slog.Logger, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink: %w", err)
	}
	defer h.Close()

	// Routing first: until the nftables rules exist nothing is marked
	// LocalMark by us, and a to-proxy mark within the mask only makes a
	// packet local, where without a proxy socket it is dropped.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("install tproxy plumbing: %w", err)
	}
	if err := ensureRoute(log, h, c); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("install tproxy plumbing: %w", err)
	}
	if err := ensureRule(log, h, c); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("install tproxy plumbing: %w", err)
	}
	if err := replaceTable(c); err != nil {
		return err
	}
	log.Info("tproxy plumbing installed",
		"listen", fmt.Sprintf("%s:%d", c.ListenAddr, c.Port),
		"to_proxy_mark", fmt.Sprintf("%#x", c.ToProxyMark),
		"local_mark", fmt.Sprintf("%#x/%#x", c.LocalMark, c.MarkMask),
		"table", c.Table, "rule_priority", c.RulePriority)
	return nil
}

// Remove deletes, from the calling thread's network namespace, the
// nftables table TableName, every IPv4 rule looking c.Table up and every
// route in c.Table. What is already gone is not an error.
func Remove(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	return remove(ctx, slog.New(slog.DiscardHandler), c.Table)
}

// Cleanup is Remove for the plumbing of NewConfig (whatever its port),
// logging one line per nftables table, ip rule and route it deletes, for
// removing Membrane from a node. Running it again is a no-op.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	return remove(ctx, log, DefaultTable)
}

func remove(ctx context.Context, log *slog.Logger, table int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove tproxy plumbing: %w", err)
	}
	// nftables first, so nothing is marked for a table that is gone.
	deleted, err := deleteTable()
	if err != nil {
		return err
	}
	if deleted {
		log.Info("deleted nftables table", "table", "ip "+TableName)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink: %w", err)
	}
	defer h.Close()
	rules, err := tableRules(h, table)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if err := h.RuleDel(&r); errors.Is(err, unix.ENOENT) {
			continue
		} else if err != nil {
			return fmt.Errorf("delete ip rule %s: %w", r, err)
		}
		log.Info("deleted ip rule", "priority", r.Priority, "fwmark", ruleMark(r), "table", table)
	}
	routes, err := tableRoutes(h, table)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if err := h.RouteDel(&r); errors.Is(err, unix.ESRCH) {
			continue
		} else if err != nil {
			return fmt.Errorf("delete route %s: %w", r, err)
		}
		log.Info("deleted route", "dst", r.Dst, "type", r.Type, "table", table)
	}
	return nil
}

// ensureRoute makes "local 0.0.0.0/0 dev lo" the only route in c.Table.
func ensureRoute(log *slog.Logger, h *netlink.Handle, c Config) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	want := netlink.Route{
		Family:    unix.AF_INET,
		Table:     c.Table,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		LinkIndex: lo.Attrs().Index,
	}
	if err := h.RouteReplace(&want); err != nil {
		return fmt.Errorf("replace route local 0.0.0.0/0 dev lo table %d: %w", c.Table, err)
	}
	routes, err := tableRoutes(h, c.Table)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if isDesiredRoute(r, want.LinkIndex) {
			continue
		}
		log.Debug("deleting stale route", "route", r.String())
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete stale route %s: %w", r, err)
		}
	}
	return nil
}

func isDesiredRoute(r netlink.Route, lo int) bool {
	if r.Type != unix.RTN_LOCAL || r.LinkIndex != lo {
		return false
	}
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// ensureRule makes "fwmark LocalMark/MarkMask lookup Table" at
// RulePriority the only IPv4 rule that looks c.Table up.
func ensureRule(log *slog.Logger, h *netlink.Handle, c Config) error {
	rules, err := tableRules(h, c.Table)
	if err != nil {
		return err
	}
	found := false
	for _, r := range rules {
		if !found && isDesiredRule(r, c) {
			found = true
			continue
		}
		log.Debug("deleting stale ip rule", "rule", r.String())
		if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete stale ip rule %s: %w", r, err)
		}
	}
	if found {
		return nil
	}
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = c.RulePriority
	r.Mark = c.LocalMark
	mask := c.MarkMask
	r.Mask = &mask
	r.Table = c.Table
	if err := h.RuleAdd(r); err != nil {
		return fmt.Errorf("add ip rule fwmark %#x/%#x lookup %d: %w", c.LocalMark, c.MarkMask, c.Table, err)
	}
	return nil
}

// isDesiredRule reports whether r (which looks c.Table up) selects exactly
// by the local mark, at the configured priority.
func isDesiredRule(r netlink.Rule, c Config) bool {
	return r.Priority == c.RulePriority &&
		r.Mark == c.LocalMark && r.Mask != nil && *r.Mask == c.MarkMask &&
		r.Src == nil && r.Dst == nil && r.IifName == "" && r.OifName == "" &&
		!r.Invert && r.Tos == 0 && r.Dport == nil && r.Sport == nil &&
		r.IPProto == 0 && r.UIDRange == nil && r.Goto <= 0 &&
		r.SuppressPrefixlen <= 0 && r.SuppressIfgroup <= 0 &&
		(r.Type == 0 || r.Type == unix.FR_ACT_TO_TBL)
}

func tableRules(h *netlink.Handle, table int) ([]netlink.Rule, error) {
	rules, err := h.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list ip rules for table %d: %w", table, err)
	}
	return rules, nil
}

func tableRoutes(h *netlink.Handle, table int) ([]netlink.Route, error) {
	routes, err := nldump.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes in table %d: %w", table, err)
	}
	return routes, nil
}

func ruleMark(r netlink.Rule) string {
	if r.Mask == nil {
		return fmt.Sprintf("%#x", r.Mark)
	}
	return fmt.Sprintf("%#x/%#x", r.Mark, *r.Mask)
}

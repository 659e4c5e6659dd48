package tproxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// state is what Install owns in one namespace.
type state struct {
	rules    []netlink.Rule  // IPv4 rules looking up the table
	routes   []netlink.Route // routes in the table
	hasTable bool            // nftables table ip membrane_proxy
	chains   []*nftables.Chain
	nftRules [][]expr.Any // rules of ChainName
}

func readState(c Config) (state, error) {
	var s state
	var err error
	if s.rules, err = netlink.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: c.Table}, netlink.RT_FILTER_TABLE); err != nil {
		return s, fmt.Errorf("list rules: %w", err)
	}
	if s.routes, err = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: c.Table}, netlink.RT_FILTER_TABLE); err != nil {
		return s, fmt.Errorf("list routes: %w", err)
	}
	conn, err := nftables.New()
	if err != nil {
		return s, err
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return s, fmt.Errorf("list nftables tables: %w", err)
	}
	s.hasTable = slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName })
	if !s.hasTable {
		return s, nil
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return s, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		s.chains = append(s.chains, ch)
		if ch.Name != ChainName {
			continue
		}
		rules, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			return s, fmt.Errorf("list nftables rules: %w", err)
		}
		for _, r := range rules {
			s.nftRules = append(s.nftRules, r.Exprs)
		}
	}
	return s, nil
}

// checkInstalled fails t unless s is exactly the state c describes.
func checkInstalled(t *testing.T, c Config, s state) {
	t.Helper()
	if len(s.rules) != 1 || !isDesiredRule(s.rules[0], c) {
		t.Errorf("ip rules for table %d: %v, want exactly fwmark %#x/%#x at %d", c.Table, s.rules, c.LocalMark, c.MarkMask, c.RulePriority)
	}
	if len(s.routes) != 1 || !isDesiredRoute(s.routes[0], 1) {
		t.Errorf("routes in table %d: %v, want exactly local 0.0.0.0/0 dev lo", c.Table, s.routes)
	}
	if !s.hasTable {
		t.Fatalf("no nftables table %s", TableName)
	}
	if len(s.chains) != 1 {
		t.Fatalf("chains in %s: %d, want 1", TableName, len(s.chains))
	}
	ch := s.chains[0]
	if ch.Name != ChainName || ch.Type != nftables.ChainTypeFilter ||
		ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookPrerouting ||
		ch.Priority == nil || *ch.Priority != *nftables.ChainPriorityMangle {
		t.Errorf("chain %+v, want %s type filter hook prerouting priority mangle", ch, ChainName)
	}
	// nftables v0.3.0 does not decode socket and tproxy expressions when
	// it reads rules back (the end-to-end test shows they work).
	var want [][]expr.Any
	for _, r := range ruleExprs(c) {
		want = append(want, slices.DeleteFunc(r, func(e expr.Any) bool {
			switch e.(type) {
			case *expr.Socket, *expr.TProxy:
				return true
			}
			return false
		}))
	}
	if diff := cmp.Diff(want, s.nftRules); diff != "" {
		t.Errorf("rules of chain %s (-want +got):\n%s", ChainName, diff)
	}
}

// addForeign adds objects Install and Remove must not touch: another
// nftables table, and an ip rule and route for another routing table.
func addForeign() error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := conn.AddTable(&nftables.Table{Name: "foreign", Family: nftables.TableFamilyIPv4})
	conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
	})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add foreign nftables table: %w", err)
	}
	r := netlink.NewRule()
	r.Family, r.Priority, r.Mark, r.Table = unix.AF_INET, 100, 0x1, 100
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("add foreign rule: %w", err)
	}
	if err := netlink.RouteAdd(&netlink.Route{Table: 100, Type: unix.RTN_BLACKHOLE, Dst: defaultDst()}); err != nil {
		return fmt.Errorf("add foreign route: %w", err)
	}
	return nil
}

func checkForeign() error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	if _, err := conn.ListTableOfFamily("foreign", nftables.TableFamilyIPv4); err != nil {
		return fmt.Errorf("foreign nftables table: %w", err)
	}
	rules, err := netlink.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: 100}, netlink.RT_FILTER_TABLE)
	if err != nil || len(rules) != 1 {
		return fmt.Errorf("foreign rules %v, %v: want one", rules, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 100}, netlink.RT_FILTER_TABLE)
	if err != nil || len(routes) != 1 {
		return fmt.Errorf("foreign routes %v, %v: want one", routes, err)
	}
	return nil
}

// addStale adds what an older Install with another config might have
// left: a rule for the table at another priority, another route in the
// table, and a chain in the nftables table that is no longer wanted.
func addStale(c Config) error {
	r := netlink.NewRule()
	mask := c.MarkMask
	r.Family, r.Priority, r.Mark, r.Mask, r.Table = unix.AF_INET, c.RulePriority-1000, c.LocalMark, &mask, c.Table
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("add stale rule: %w", err)
	}
	if err := netlink.RouteAdd(&netlink.Route{Table: c.Table, Type: unix.RTN_BLACKHOLE, Dst: netIPNet("10.0.0.0/8")}); err != nil {
		return fmt.Errorf("add stale route: %w", err)
	}
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := conn.AddTable(nftTable())
	conn.AddChain(&nftables.Chain{Name: "junk", Table: tbl})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add stale chain: %w", err)
	}
	return nil
}

func TestInstallConvergesAndRemove(t *testing.T) {
	requireRoot(t)
	requireKernel(t)
	ns := newNetns(t, "node")
	c := NewConfig(15001)
	ctx := t.Context()
	log := testLogger(t)

	in(t, ns, addForeign)

	// A canceled context and an invalid config change nothing.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	in(t, ns, func() error {
		if err := Install(canceled, log, c); !errors.Is(err, context.Canceled) {
			return fmt.Errorf("Install with a canceled context: %v, want context.Canceled", err)
		}
		bad := c
		bad.Port = 0
		if err := Install(ctx, log, bad); err == nil {
			return errors.New("Install with port 0 succeeded")
		}
		return nil
	})
	var s state
	in(t, ns, func() (err error) { s, err = readState(c); return err })
	if len(s.rules) != 0 || len(s.routes) != 0 || s.hasTable {
		t.Fatalf("failed Installs left state: %+v", s)
	}

	in(t, ns, func() error { return addStale(c) })
	for i := range 2 {
		in(t, ns, func() error { return Install(ctx, log, c) })
		in(t, ns, func() (err error) { s, err = readState(c); return err })
		t.Logf("after Install #%d: rules %v, routes %v", i+1, s.rules, s.routes)
		checkInstalled(t, c, s)
		in(t, ns, checkForeign)
	}

	for i := range 2 {
		in(t, ns, func() error { return Remove(ctx, c) })
		in(t, ns, func() (err error) { s, err = readState(c); return err })
		if len(s.rules) != 0 || len(s.routes) != 0 || s.hasTable {
			t.Errorf("after Remove #%d: rules %v, routes %v, nftables table %v; want none", i+1, s.rules, s.routes, s.hasTable)
		}
		in(t, ns, checkForeign)
	}
}

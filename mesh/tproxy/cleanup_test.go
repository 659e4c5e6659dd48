package tproxy

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestCleanup removes the plumbing of any proxy port and leaves another
// nftables table, ip rule and routing table alone; a second run is a no-op.
func TestCleanup(t *testing.T) {
	requireRoot(t)
	requireKernel(t)
	ns := newNetns(t, "node")
	c := NewConfig(15123)
	ctx := t.Context()
	in(t, ns, addForeign)
	in(t, ns, func() error { return Install(ctx, testLogger(t), c) })

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	in(t, ns, func() error { return Cleanup(ctx, log) })
	t.Logf("Cleanup:\n%s", logs.String())
	var s state
	in(t, ns, func() (err error) { s, err = readState(c); return err })
	if len(s.rules) != 0 || len(s.routes) != 0 || s.hasTable {
		t.Errorf("after Cleanup: rules %v, routes %v, nftables table %v; want none", s.rules, s.routes, s.hasTable)
	}
	in(t, ns, checkForeign)
	for _, want := range []string{"deleted nftables table", "deleted ip rule", "deleted route"} {
		if strings.Count(logs.String(), want) != 1 {
			t.Errorf("Cleanup logged %q %d times, want once", want, strings.Count(logs.String(), want))
		}
	}

	logs.Reset()
	in(t, ns, func() error { return Cleanup(ctx, log) })
	if logs.Len() != 0 {
		t.Errorf("second Cleanup logged:\n%s", logs.String())
	}
	in(t, ns, checkForeign)
}

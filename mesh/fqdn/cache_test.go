package fqdn

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
)

var (
	t0   = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pod1 = netip.MustParseAddr("10.0.1.5")
	pod2 = netip.MustParseAddr("10.0.1.6")
	ipA  = netip.MustParseAddr("192.0.2.1")
	ipB  = netip.MustParseAddr("192.0.2.2")
	ipC  = netip.MustParseAddr("192.0.2.3")
)

// addrs compares netip.Addr values in cmp.Diff.
var addrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// clock is a settable clock.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newCache(minTTL time.Duration) (*Cache, *clock) {
	clk := &clock{now: t0}
	return New(Config{MinTTL: minTTL, Now: clk.Now}), clk
}

func ips(as ...netip.Addr) []netip.Addr { return as }

func entryIPs(es []Entry) []netip.Addr {
	var out []netip.Addr
	for _, e := range es {
		out = append(out, e.IP)
	}
	return out
}

func TestUpdate(t *testing.T) {
	c, clk := newCache(10 * time.Second)

	ch := c.Update(pod1, "API.example.com", ips(ipB, ipA), 60*time.Second)
	want := Change{Source: pod1, Name: "api.example.com.", Added: ips(ipA, ipB)}
	if diff := cmp.Diff(want, ch, addrs); diff != "" {
		t.Errorf("first answer (-want +got):\n%s", diff)
	}

	// A repeated answer adds nothing; a new IP is added.
	clk.now = t0.Add(5 * time.Second)
	if ch := c.Update(pod1, "api.example.com.", ips(ipA, ipC), 1*time.Second); !slices.Equal(ch.Added, ips(ipC)) {
		t.Errorf("second answer added %v, want [%s]", ch.Added, ipC)
	}

	got := c.Lookup(pod1, "api.example.com")
	wantEntries := []Entry{
		// Renewed by the second answer: learned then, but the first
		// answer's later expiry stays.
		{Source: pod1, Name: "api.example.com.", IP: ipA, Learned: t0.Add(5 * time.Second), Expires: t0.Add(60 * time.Second), TTL: 55 * time.Second},
		{Source: pod1, Name: "api.example.com.", IP: ipB, Learned: t0, Expires: t0.Add(60 * time.Second), TTL: 55 * time.Second},
		// TTL 1s is raised to MinTTL 10s.
		{Source: pod1, Name: "api.example.com.", IP: ipC, Learned: t0.Add(5 * time.Second), Expires: t0.Add(15 * time.Second), TTL: 10 * time.Second},
	}
	if diff := cmp.Diff(wantEntries, got, addrs); diff != "" {
		t.Errorf("Lookup (-want +got):\n%s", diff)
	}

	// Per source: pod2 has nothing for the name; its own answer is new.
	if got := c.Lookup(pod2, "api.example.com"); len(got) != 0 {
		t.Errorf("pod2 has %v, want nothing", got)
	}
	if ch := c.Update(pod2, "api.example.com", ips(ipA), time.Minute); !slices.Equal(ch.Added, ips(ipA)) {
		t.Errorf("pod2's answer added %v, want [%s]", ch.Added, ipA)
	}

	// Nothing to record.
	if ch := c.Update(pod1, "x.example.com", nil, time.Minute); len(ch.Added) != 0 {
		t.Errorf("an empty answer added %v", ch.Added)
	}
	if ch := c.Update(netip.Addr{}, "x.example.com", ips(ipA), time.Minute); len(ch.Added) != 0 {
		t.Errorf("an answer without source added %v", ch.Added)
	}
	// IPv4-mapped addresses are IPv4.
	mapped := netip.AddrFrom16(ipA.As16())
	if ch := c.Update(netip.AddrFrom16(pod1.As16()), "api.example.com", ips(mapped), time.Minute); len(ch.Added) != 0 {
		t.Errorf("the mapped form of a known IP was added: %v", ch.Added)
	}
}

func TestMaxIPsPerName(t *testing.T) {
	clk := &clock{now: t0}
	c := New(Config{MaxIPsPerName: 2, Now: clk.Now})
	c.Update(pod1, "a.com", ips(ipA), 10*time.Second)
	c.Update(pod1, "a.com", ips(ipB), 30*time.Second)
	ch := c.Update(pod1, "a.com", ips(ipC), 20*time.Second)
	if !slices.Equal(ch.Evicted, ips(ipA)) || !slices.Equal(ch.Added, ips(ipC)) {
		t.Errorf("change %+v, want ipA (expiring first) evicted and ipC added", ch)
	}
	if got := entryIPs(c.Lookup(pod1, "a.com")); !slices.Equal(got, ips(ipB, ipC)) {
		t.Errorf("kept %v, want [%s %s]", got, ipB, ipC)
	}
}

func TestSelect(t *testing.T) {
	c, _ := newCache(0)
	c.Update(pod1, "a.example.com", ips(ipA), time.Minute)
	c.Update(pod1, "b.example.com", ips(ipB), time.Minute)
	c.Update(pod1, "example.com", ips(ipC), time.Minute)
	c.Update(pod2, "c.example.com", ips(ipC), time.Minute)
	m, err := matchpattern.Compile("*.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got := entryIPs(c.Select(pod1, m.Match)); !slices.Equal(got, ips(ipA, ipB)) {
		t.Errorf("pod1 *.example.com: %v, want [%s %s]", got, ipA, ipB)
	}
	if got := entryIPs(c.Select(pod2, m.Match)); !slices.Equal(got, ips(ipC)) {
		t.Errorf("pod2 *.example.com: %v, want [%s]", got, ipC)
	}
	if got := c.Sources(); !slices.Equal(got, ips(pod1, pod2)) {
		t.Errorf("Sources() = %v", got)
	}
}

func TestExpire(t *testing.T) {
	c, clk := newCache(30 * time.Second)
	c.Update(pod1, "a.com", ips(ipA, ipB), 10*time.Second) // expires t0+30s (min TTL)
	c.Update(pod1, "b.com", ips(ipC), 60*time.Second)      // expires t0+60s
	c.Update(pod2, "a.com", ips(ipA), 10*time.Second)      // expires t0+30s

	inUse := map[netip.Addr]bool{}
	asked := map[netip.Addr]int{}
	used := func(ip netip.Addr) bool { asked[ip]++; return inUse[ip] }

	if got := c.Expire(t0.Add(29*time.Second), used); len(got) != 0 {
		t.Errorf("before the TTL: removed %v", got)
	}
	if len(asked) != 0 {
		t.Errorf("asked about IPs that have not expired: %v", asked)
	}

	// At expiry, ipA is still used by a connection: it stays (for both
	// sources); ipB goes.
	inUse[ipA] = true
	got := c.Expire(t0.Add(30*time.Second), used)
	if diff := cmp.Diff([]Entry{{Source: pod1, Name: "a.com.", IP: ipB, Learned: t0, Expires: t0.Add(30 * time.Second)}}, got, addrs); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if asked[ipA] != 1 {
		t.Errorf("asked %d times about %s, want once per call", asked[ipA], ipA)
	}
	clk.now = t0.Add(45 * time.Second)
	if got := entryIPs(c.Lookup(pod1, "a.com")); !slices.Equal(got, ips(ipA)) {
		t.Errorf("after expiry, in use: %v, want [%s]", got, ipA)
	}
	if e := c.Lookup(pod1, "a.com"); len(e) == 1 && e[0].TTL != 0 {
		t.Errorf("TTL of an expired entry: %s, want 0", e[0].TTL)
	}

	// The connection ends: ipA goes for both; ipC (not expired) stays.
	inUse[ipA] = false
	got = c.Expire(t0.Add(45*time.Second), used)
	if g := entryIPs(got); !slices.Equal(g, ips(ipA, ipA)) || got[0].Source != pod1 || got[1].Source != pod2 {
		t.Errorf("removed %v, want ipA of pod1 and pod2", got)
	}
	if got := c.Snapshot(); len(got) != 1 || got[0].IP != ipC {
		t.Errorf("left %v, want only %s", got, ipC)
	}
	// A nil inUse means nothing is in use.
	if got := c.Expire(t0.Add(time.Hour), nil); len(got) != 1 {
		t.Errorf("removed %v, want the last entry", got)
	}
	if got := c.Sources(); len(got) != 0 {
		t.Errorf("sources left: %v", got)
	}
}

func TestForget(t *testing.T) {
	c, _ := newCache(0)
	c.Update(pod1, "a.com", ips(ipA), time.Minute)
	c.Update(pod2, "a.com", ips(ipB), time.Minute)
	if got := c.Forget(pod1); len(got) != 1 || got[0].IP != ipA {
		t.Errorf("Forget(pod1) = %v", got)
	}
	if got := c.Sources(); !slices.Equal(got, ips(pod2)) {
		t.Errorf("sources %v, want [%s]", got, pod2)
	}
}

func TestSaveLoad(t *testing.T) {
	c, clk := newCache(0)
	c.Update(pod1, "a.com", ips(ipA, ipB), time.Minute)
	clk.now = t0.Add(time.Second)
	c.Update(pod2, "b.com", ips(ipC), time.Hour)
	path := filepath.Join(t.TempDir(), "state", "fqdn.json")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	// Overwriting works and leaves no temporary files.
	c.Update(pod2, "c.com", ips(ipA), time.Hour)
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	if files, _ := os.ReadDir(filepath.Dir(path)); len(files) != 1 {
		t.Errorf("files next to the cache: %v, want only it", files)
	}

	loaded, err := Load(path, Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.Snapshot(), loaded.Snapshot(), addrs); diff != "" {
		t.Errorf("loaded (-saved +loaded):\n%s", diff)
	}
	// Expired entries survive the restart; Expire decides about them.
	clk.now = t0.Add(2 * time.Hour)
	loaded, err = Load(path, Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(loaded.Snapshot()); got != 4 {
		t.Errorf("%d entries loaded after expiry, want 4", got)
	}

	// A missing file is an empty cache.
	empty, err := Load(filepath.Join(t.TempDir(), "none.json"), Config{})
	if err != nil || len(empty.Snapshot()) != 0 {
		t.Errorf("Load of a missing file: %v, %v", empty.Snapshot(), err)
	}
}

func TestLoadCorrupted(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ content, want string }{
		"truncated":    {`{"version":1,"entries":[{"source":"10.0.1.5"`, "unexpected EOF"},
		"garbage":      {"\x00\x01binary", "invalid character"},
		"version":      {`{"version":7,"entries":[]}`, "version 7, want 1"},
		"bad ip":       {`{"version":1,"entries":[{"source":"10.0.1.5","name":"a.com.","ip":"300.1.1.1","expires":"2026-01-01T00:00:00Z"}]}`, "300.1.1.1"},
		"no ip":        {`{"version":1,"entries":[{"source":"10.0.1.5","name":"a.com.","expires":"2026-01-01T00:00:00Z"}]}`, "entries[0].ip: missing"},
		"bad name":     {`{"version":1,"entries":[{"source":"10.0.1.5","name":"a b","ip":"1.1.1.1","expires":"2026-01-01T00:00:00Z"}]}`, `entries[0].name "a b"`},
		"no expiry":    {`{"version":1,"entries":[{"source":"10.0.1.5","name":"a.com.","ip":"1.1.1.1"}]}`, "entries[0].expires: missing"},
		"unknown keys": {`{"version":1,"entries":[],"extra":1}`, "unknown field"},
	} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, Config{})
		if err == nil {
			t.Errorf("%s: loaded %v, want an error", name, c.Snapshot())
			continue
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want one naming %s and saying %q", name, err, path, tc.want)
		}
	}
	// A directory where the file should be.
	if _, err := Load(dir, Config{}); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Load of a directory: %v, want an error naming it", err)
	}
}

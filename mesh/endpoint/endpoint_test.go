package endpoint

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/membrane-mesh/membrane/mesh/policy"
)

// fakeLinks is a Links with fixed interfaces.
type fakeLinks struct {
	ifaces map[netip.Addr]Interface
	err    error
}

func (f fakeLinks) HostInterfaces() (map[netip.Addr]Interface, error) { return f.ifaces, f.err }

func TestLocal(t *testing.T) {
	a := netip.MustParseAddr
	pods := []Pod{
		{Namespace: "ns", Name: "a", Node: "n1", IP: a("10.244.0.5"), Identity: 300},
		{Namespace: "ns", Name: "remote", Node: "n2", IP: a("10.244.1.5"), Identity: 300},
		{Namespace: "ns", Name: "no-veth-yet", Node: "n1", IP: a("10.244.0.6")},
	}
	d := Discovery{Node: "n1", Links: fakeLinks{ifaces: map[netip.Addr]Interface{
		a("10.244.0.5"): {Index: 7, Name: "mbr1234"},
		a("10.244.1.5"): {Index: 8, Name: "mbr5678"}, // not this node's pod
	}}}
	got, err := d.Local(pods)
	if err != nil {
		t.Fatal(err)
	}
	want := []Local{
		{Pod: pods[0], Interface: Interface{Index: 7, Name: "mbr1234"}, HasInterface: true},
		{Pod: pods[2]},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("local endpoints (-want +got):\n%s", diff)
	}

	d.Links = fakeLinks{err: errors.New("netlink: permission denied")}
	if _, err := d.Local(pods); err == nil {
		t.Error("an interface listing error was not returned")
	}
}

func TestResolveKey(t *testing.T) {
	p := Pod{Identity: 300, NamedPorts: map[string]policy.NamedPort{"web": {Port: 80, Proto: policy.TCP}, "dns": {Port: 53, Proto: policy.UDP}}}
	q := p
	q.NamedPorts = map[string]policy.NamedPort{"dns": {Port: 53, Proto: policy.UDP}, "web": {Port: 80, Proto: policy.TCP}}
	if p.ResolveKey() != q.ResolveKey() {
		t.Errorf("same identity and ports, different keys: %q, %q", p.ResolveKey(), q.ResolveKey())
	}
	q.NamedPorts = map[string]policy.NamedPort{"dns": {Port: 53, Proto: policy.UDP}, "web": {Port: 8080, Proto: policy.TCP}}
	if p.ResolveKey() == q.ResolveKey() {
		t.Errorf("different named ports, same key %q", p.ResolveKey())
	}
	q = p
	q.Identity = 301
	if p.ResolveKey() == q.ResolveKey() {
		t.Errorf("different identities, same key %q", p.ResolveKey())
	}
}

// countingLinks counts the lookups of the interfaces.
type countingLinks struct {
	ifaces  map[netip.Addr]Interface
	lookups int
}

func (c *countingLinks) HostInterfaces() (map[netip.Addr]Interface, error) {
	c.lookups++
	return c.ifaces, nil
}

func TestLocalLooksAgainOnlyWhenNeeded(t *testing.T) {
	a := netip.MustParseAddr
	links := &countingLinks{ifaces: map[netip.Addr]Interface{a("10.244.0.5"): {Index: 7, Name: "mbr1234"}}}
	d := Discovery{Node: "n1", Links: links}
	pods := []Pod{
		{Namespace: "ns", Name: "a", Node: "n1", IP: a("10.244.0.5")},
		{Namespace: "ns", Name: "pending", Node: "n1"},                     // no address yet
		{Namespace: "ns", Name: "remote", Node: "n2", IP: a("10.244.1.5")}, // not this node's
	}
	step := func(name string, pods []Pod, wantLookups int) []Local {
		t.Helper()
		got, err := d.Local(pods)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if links.lookups != wantLookups {
			t.Errorf("%s: %d lookups in all, want %d", name, links.lookups, wantLookups)
		}
		return got
	}
	step("first", pods, 1)
	step("unchanged pods", pods, 1)

	// A new pod whose interface is not there yet: looked up every time
	// until it is.
	pods = append(pods, Pod{Namespace: "ns", Name: "b", Node: "n1", IP: a("10.244.0.6")})
	if got := step("new pod", pods, 2); got[2].HasInterface {
		t.Errorf("new pod: has interface %+v before there is one", got[2].Interface)
	}
	step("new pod, still no interface", pods, 3)
	links.ifaces = map[netip.Addr]Interface{a("10.244.0.5"): {Index: 7, Name: "mbr1234"}, a("10.244.0.6"): {Index: 9, Name: "mbr9abc"}}
	if got := step("new pod's interface there", pods, 4); !got[2].HasInterface || got[2].Interface.Index != 9 {
		t.Errorf("new pod: %+v, want interface 9", got[2])
	}
	step("all found", pods, 4)

	// An interface replaced under a known address is found after
	// Invalidate.
	links.ifaces = map[netip.Addr]Interface{a("10.244.0.5"): {Index: 11, Name: "mbr1111"}, a("10.244.0.6"): {Index: 9, Name: "mbr9abc"}}
	if got := step("before Invalidate", pods, 4); got[0].Interface.Index != 7 {
		t.Errorf("before Invalidate: interface %d, want the one found before (7)", got[0].Interface.Index)
	}
	d.Invalidate()
	if got := step("after Invalidate", pods, 5); got[0].Interface.Index != 11 {
		t.Errorf("after Invalidate: interface %d, want 11", got[0].Interface.Index)
	}
	if ifaces, err := d.Interfaces(); err != nil || len(ifaces) != 2 || links.lookups != 5 {
		t.Errorf("Interfaces: %v, %v after %d lookups; want the 2 found, no new lookup", ifaces, err, links.lookups)
	}
}

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

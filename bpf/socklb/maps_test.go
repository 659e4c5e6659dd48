package socklb

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestMapBookkeeping checks the entries UpsertService and DeleteService keep
// beside the slots: reverse NAT and affinity match.
func TestMapBookkeeping(t *testing.T) {
	e := newEnv(t, Options{})
	a := Frontend{Addr: netip.MustParseAddr("10.96.0.1"), Port: 443, Proto: TCP}
	b := Frontend{Addr: netip.MustParseAddr("10.96.0.2"), Port: 443, Proto: TCP}
	udp := a
	udp.Proto = UDP
	sticky := ServiceInfo{RevNATID: 1, Flags: FlagAffinity, AffinityTimeout: time.Hour}

	matches := func() []socklbLb4AffinityMatchKey {
		var (
			k   socklbLb4AffinityMatchKey
			v   uint8
			out []socklbLb4AffinityMatchKey
		)
		it := e.dp.affinityMatch.Iterate()
		for it.Next(&k, &v) {
			out = append(out, k)
		}
		must(t, it.Err())
		return out
	}
	wantMatches := func(ids ...uint32) {
		t.Helper()
		got := map[uint32]bool{}
		for _, k := range matches() {
			if k.RevNatId != 1 {
				t.Errorf("match entry %+v for rev-NAT %d", k, k.RevNatId)
			}
			got[k.BackendId] = true
		}
		want := map[uint32]bool{}
		for _, id := range ids {
			want[id] = true
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("affinity match backends %v, want %v", got, want)
		}
	}

	must(t, e.dp.UpsertService(a, sticky, []BackendID{1, 2}))
	wantMatches(1, 2)
	must(t, e.dp.UpsertService(a, sticky, []BackendID{2, 3}))
	wantMatches(2, 3)
	must(t, e.dp.UpsertService(a, ServiceInfo{RevNATID: 1}, []BackendID{2, 3}))
	wantMatches()
	must(t, e.dp.UpsertService(a, sticky, []BackendID{2, 3}))
	must(t, e.dp.DeleteService(a))
	wantMatches()

	// A rev-NAT ID belongs to one frontend, even one on the same address.
	must(t, e.dp.UpsertService(a, ServiceInfo{RevNATID: 5}, []BackendID{1}))
	if err := e.dp.UpsertService(b, ServiceInfo{RevNATID: 5}, []BackendID{1}); !errors.Is(err, ErrRevNATInUse) {
		t.Errorf("second frontend with rev-NAT 5: %v, want ErrRevNATInUse", err)
	}
	if err := e.dp.UpsertService(udp, ServiceInfo{RevNATID: 5}, []BackendID{1}); !errors.Is(err, ErrRevNATInUse) {
		t.Errorf("UDP sibling with rev-NAT 5: %v, want ErrRevNATInUse", err)
	}
	// Moving a frontend to another ID frees the old one.
	must(t, e.dp.UpsertService(a, ServiceInfo{RevNATID: 6}, []BackendID{1}))
	must(t, e.dp.UpsertService(b, ServiceInfo{RevNATID: 5}, []BackendID{1}))
	d, err := e.dp.Dump()
	must(t, err)
	want := []RevNATEntry{
		{ID: 5, Frontend: netip.AddrPortFrom(b.Addr, b.Port)},
		{ID: 6, Frontend: netip.AddrPortFrom(a.Addr, a.Port)},
	}
	if !reflect.DeepEqual(d.RevNAT, want) {
		t.Errorf("rev-NAT %+v, want %+v", d.RevNAT, want)
	}

	// Invalid input changes nothing.
	for _, bad := range [][]BackendID{{0}, {1, 1}} {
		if err := e.dp.UpsertService(a, ServiceInfo{RevNATID: 6}, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("backends %v: %v, want ErrInvalid", bad, err)
		}
	}
	after, err := e.dp.Dump()
	must(t, err)
	if !reflect.DeepEqual(d, after) {
		t.Errorf("rejected upserts changed the maps:\n%+v\n%+v", d, after)
	}
}

// TestPinnedMapsReused covers what the CLI and a reconfigured agent see.
func TestPinnedMapsReused(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.dp.UpsertBackend(1, Backend{Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Proto: TCP}))
	must(t, e.dp.UpsertService(Frontend{Addr: vip(), Port: 80, Proto: TCP}, ServiceInfo{RevNATID: 1}, []BackendID{1}))
	want, err := e.dp.Dump()
	must(t, err)

	m, err := OpenPinned(e.pinDir)
	must(t, err)
	got, err := m.Dump()
	must(t, err)
	must(t, m.Close())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OpenPinned dump %+v, want %+v", got, want)
	}

	// Other map sizes do not fit the pinned maps: refuse, keep running.
	opts := e.opts
	opts.MaxServices = 1024
	if _, err := Load(t.Context(), testLogger(t), opts); !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Errorf("load with another MaxServices: %v, want ErrMapIncompatible", err)
	}
	if n := attachedPrograms(t, e.cgroup); n != len(hooks()) {
		t.Errorf("%d programs attached after the refused load, want %d", n, len(hooks()))
	}
}

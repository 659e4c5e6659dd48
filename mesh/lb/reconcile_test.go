package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/model"
)

// fakeDatapath records the calls the reconciler makes.
type fakeDatapath struct {
	backends map[BackendID]Backend
	services map[Frontend]Programmed
	calls    []string
	failOn   string
}

func newFake() *fakeDatapath {
	return &fakeDatapath{backends: map[BackendID]Backend{}, services: map[Frontend]Programmed{}}
}

func (d *fakeDatapath) call(s string) error {
	d.calls = append(d.calls, s)
	if d.failOn != "" && strings.HasPrefix(s, d.failOn) {
		return fmt.Errorf("injected failure")
	}
	return nil
}

func (d *fakeDatapath) UpsertBackend(id BackendID, b Backend) error {
	if err := d.call(fmt.Sprintf("upsert-backend %d %s", id, b)); err != nil {
		return err
	}
	d.backends[id] = b
	return nil
}

func (d *fakeDatapath) DeleteBackend(id BackendID) error {
	if err := d.call(fmt.Sprintf("delete-backend %d", id)); err != nil {
		return err
	}
	delete(d.backends, id)
	return nil
}

func (d *fakeDatapath) UpsertService(f Frontend, info ServiceInfo, ids []BackendID) error {
	if err := d.call(fmt.Sprintf("upsert-service %s %v", f, ids)); err != nil {
		return err
	}
	for _, id := range ids {
		if _, ok := d.backends[id]; !ok {
			return fmt.Errorf("service %s refers to missing backend %d", f, id)
		}
	}
	d.services[f] = Programmed{Info: info, Backends: slices.Clone(ids)}
	return nil
}

func (d *fakeDatapath) DeleteService(f Frontend) error {
	if err := d.call(fmt.Sprintf("delete-service %s", f)); err != nil {
		return err
	}
	delete(d.services, f)
	return nil
}

// check verifies the datapath holds exactly entries and no stray backend.
func (d *fakeDatapath) check(t *testing.T, entries ...Entry) {
	t.Helper()
	if len(d.services) != len(entries) {
		t.Fatalf("datapath has %d services, want %d: %v", len(d.services), len(entries), d.services)
	}
	used := map[BackendID]bool{}
	for _, e := range entries {
		p, ok := d.services[e.Frontend]
		if !ok {
			t.Fatalf("frontend %s missing", e.Frontend)
		}
		var got []string
		for _, id := range p.Backends {
			used[id] = true
			got = append(got, d.backends[id].String())
		}
		var want []string
		for _, b := range e.Backends {
			want = append(want, b.Backend.String())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s backends = %v, want %v", e.Frontend, got, want)
		}
	}
	for id := range d.backends {
		if !used[id] {
			t.Fatalf("backend %d (%s) is unreferenced", id, d.backends[id])
		}
	}
}

func entry(vip string, port uint16, backends ...string) Entry {
	e := Entry{Frontend: Frontend{Addr: netip.MustParseAddr(vip), Port: port, Protocol: model.TCP}, Kind: KindClusterIP}
	for _, b := range backends {
		ap := netip.MustParseAddrPort(b)
		e.Backends = append(e.Backends, BackendRef{Backend: Backend{Addr: ap.Addr(), Port: ap.Port(), Protocol: model.TCP}, State: Active})
	}
	return e
}

func TestReconcilerTouchesOnlyWhatChanged(t *testing.T) {
	dp := newFake()
	r := NewReconciler(dp)
	a, b := model.ServiceID{Namespace: "ns", Name: "a"}, model.ServiceID{Namespace: "ns", Name: "b"}
	ea := entry("10.96.0.1", 80, "10.244.0.1:8080", "10.244.1.1:8080")
	eb := entry("10.96.0.2", 80, "10.244.0.1:8080")
	if err := r.Apply(a, []Entry{ea}); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(b, []Entry{eb}); err != nil {
		t.Fatal(err)
	}
	dp.check(t, ea, eb)

	dp.calls = nil
	if err := r.Apply(a, []Entry{ea}); err != nil {
		t.Fatal(err)
	}
	if len(dp.calls) != 0 {
		t.Fatalf("re-applying an unchanged service wrote %v", dp.calls)
	}

	// One endpoint goes away from a: b's entries and the shared backend stay.
	ea2 := entry("10.96.0.1", 80, "10.244.0.1:8080")
	if err := r.Apply(a, []Entry{ea2}); err != nil {
		t.Fatal(err)
	}
	for _, c := range dp.calls {
		if strings.Contains(c, "10.96.0.2") {
			t.Fatalf("changing a touched b: %v", dp.calls)
		}
	}
	dp.check(t, ea2, eb)

	if err := r.Apply(a, nil); err != nil {
		t.Fatal(err)
	}
	dp.check(t, eb)
	if got := r.Snapshot(); len(got) != 1 || got[0].Frontend != eb.Frontend {
		t.Fatalf("snapshot = %+v", got)
	}
}

func TestReconcilerRestoreKeepsIDsAndPrunes(t *testing.T) {
	dp := newFake()
	r := NewReconciler(dp)
	svc := model.ServiceID{Namespace: "ns", Name: "a"}
	gone := model.ServiceID{Namespace: "ns", Name: "gone"}
	ea := entry("10.96.0.1", 80, "10.244.0.1:8080", "10.244.1.1:8080")
	eg := entry("10.96.0.9", 80, "10.244.0.9:8080")
	if err := r.Apply(svc, []Entry{ea}); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(gone, []Entry{eg}); err != nil {
		t.Fatal(err)
	}
	before := dp.services[ea.Frontend]

	// A new agent adopts the datapath: nothing is rewritten for what is unchanged.
	r2 := NewReconciler(dp)
	r2.Restore(dp.backends, dp.services)
	dp.calls = nil
	if err := r2.Apply(svc, []Entry{ea}); err != nil {
		t.Fatal(err)
	}
	if len(dp.calls) != 0 {
		t.Fatalf("restored, unchanged service rewritten: %v", dp.calls)
	}
	if got := dp.services[ea.Frontend]; got.Info != before.Info || !slices.Equal(got.Backends, before.Backends) {
		t.Fatalf("restored entry changed: %+v, was %+v", got, before)
	}
	if err := r2.Prune(); err != nil {
		t.Fatal(err)
	}
	dp.check(t, ea)
	// New IDs do not collide with restored ones.
	e3 := entry("10.96.0.3", 80, "10.244.2.2:8080")
	if err := r2.Apply(model.ServiceID{Namespace: "ns", Name: "c"}, []Entry{e3}); err != nil {
		t.Fatal(err)
	}
	dp.check(t, ea, e3)
}

func TestReconcilerConflictsAndFailures(t *testing.T) {
	dp := newFake()
	r := NewReconciler(dp)
	a, b := model.ServiceID{Namespace: "ns", Name: "a"}, model.ServiceID{Namespace: "ns", Name: "b"}
	ea := entry("10.96.0.1", 80, "10.244.0.1:8080")
	if err := r.Apply(a, []Entry{ea}); err != nil {
		t.Fatal(err)
	}
	err := r.Apply(b, []Entry{entry("10.96.0.1", 80, "10.244.0.5:8080"), entry("10.96.0.2", 80, "10.244.0.5:8080")})
	if err == nil || !strings.Contains(err.Error(), "already used by ns/a") {
		t.Fatalf("want a conflict error, got %v", err)
	}
	dp.check(t, ea, entry("10.96.0.2", 80, "10.244.0.5:8080"))

	dp.failOn = "upsert-service 10.96.0.3"
	if err := r.Apply(model.ServiceID{Namespace: "ns", Name: "c"}, []Entry{entry("10.96.0.3", 80, "10.244.0.7:8080")}); err == nil {
		t.Fatal("want the injected failure")
	}
	dp.failOn = ""
	dp.check(t, ea, entry("10.96.0.2", 80, "10.244.0.5:8080"))
}

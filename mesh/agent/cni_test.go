package agent

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/datapath"
)

// initMaps records the endpoints written; nothing else matters here.
type initMaps struct {
	endpoints map[int]bpfpolicy.Endpoint
	routes    map[netip.Addr]bpfpolicy.LocalRoute
	attached  []int
}

func (m *initMaps) UpsertIPCache(netip.Prefix, bpfpolicy.Identity) error { return nil }
func (m *initMaps) DeleteIPCache(netip.Prefix) error                     { return nil }
func (m *initMaps) UpsertEndpoint(ifindex int, ep bpfpolicy.Endpoint) error {
	m.endpoints[ifindex] = ep
	return nil
}
func (m *initMaps) DeleteEndpoint(ifindex int) error { delete(m.endpoints, ifindex); return nil }
func (m *initMaps) UpsertLocalRoute(addr netip.Addr, r bpfpolicy.LocalRoute) error {
	m.routes[addr] = r
	return nil
}
func (m *initMaps) DeleteLocalRoute(addr netip.Addr) error                         { delete(m.routes, addr); return nil }
func (m *initMaps) SetEndpointPolicy(bpfpolicy.EndpointID, []bpfpolicy.Rule) error { return nil }
func (m *initMaps) Revise() error                                                  { return nil }
func (m *initMaps) Attach(ifindex int) error                                       { m.attached = append(m.attached, ifindex); return nil }
func (m *initMaps) Detach(int) error                                               { return nil }
func (m *initMaps) Attached() ([]int, error)                                       { return m.attached, nil }
func (m *initMaps) Dump() (bpfpolicy.Dump, error)                                  { return bpfpolicy.Dump{}, nil }

func TestCNIEndpointAdded(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	maps := &initMaps{endpoints: map[int]bpfpolicy.Endpoint{}, routes: map[netip.Addr]bpfpolicy.LocalRoute{}}
	w, err := datapath.New(log, maps)
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoints{log: log, writer: w, inits: make(chan initRequest), wanted: make(chan struct{}, 1)}
	// The regeneration loop's part.
	go func() {
		for r := range e.inits {
			e.serveInit(r)
		}
	}()
	t.Cleanup(func() { close(e.inits) })
	a := &Agent{log: log, eps: e}

	post := func(body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		http.HandlerFunc(a.cniEndpointAdded).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, agentapi.PathCNIEndpoints, strings.NewReader(body)))
		return rec
	}
	rec := post(`{"namespace":"ns","pod":"p","ip":"10.244.0.9","ifindex":42}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"identity":5`) {
		t.Fatalf("POST: %d %s, want 200 with the init identity", rec.Code, rec.Body)
	}
	if ep := maps.endpoints[42]; ep.Identity != bpfpolicy.IdentityInit || ep.Addr != netip.MustParseAddr("10.244.0.9") || len(maps.attached) != 1 {
		t.Errorf("endpoint %+v attached %v, want the init identity on 42, attached", ep, maps.attached)
	}
	select {
	case <-e.wanted:
	default:
		t.Error("no regeneration requested")
	}
	if len(maps.routes) != 0 {
		t.Errorf("routes %v without the link's MACs, want none", maps.routes)
	}
	// With the link's MACs: the local route for host routing too.
	rec = post(`{"ip":"10.244.0.10","ifindex":43,"hostMAC":"02:00:00:00:00:01","podMAC":"02:00:00:00:00:02"}`)
	if r := maps.routes[netip.MustParseAddr("10.244.0.10")]; rec.Code != http.StatusOK || r.Ifindex != 43 ||
		r.HostMAC.String() != "02:00:00:00:00:01" || r.PodMAC.String() != "02:00:00:00:00:02" {
		t.Errorf("POST with MACs: %d, route %+v; want the route through 43", rec.Code, r)
	}
	for body, want := range map[string]string{
		`{"ip":"10.244.0.9","ifindex":0}`: "ifindex 0",
		`{"ip":"fd00::1","ifindex":3}`:    "IPv4",
		`{`:                               "decode",
		`{"ip":"10.244.0.9","ifindex":3,"hostMAC":"x","podMAC":"02:00:00:00:00:02"}`: "MAC",
	} {
		if rec := post(body); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("POST %s: %d %s, want 400 naming %q", body, rec.Code, rec.Body, want)
		}
	}
}

package workload

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
	"github.com/membrane-mesh/membrane/mesh/svid"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func TestPodUIDFromCgroup(t *testing.T) {
	for in, want := range map[string]string{
		"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_0000_4000_8000_123456789abc.slice/cri-containerd-abc.scope\n": "1b2c3d4e-0000-4000-8000-123456789abc",
		"12:memory:/kubepods/burstable/pod1b2c3d4e-0000-4000-8000-123456789abc/0123abcd\n0::/\n":                                                    "1b2c3d4e-0000-4000-8000-123456789abc",
		"0::/membrane-e2e/node-a/pods/1b2c3d4e-0000-4000-8000-123456789abc\n":                                                                       "1b2c3d4e-0000-4000-8000-123456789abc",
		"0::/user.slice/user-0.slice/session-1.scope\n":                                                                                             "",
	} {
		got, ok := PodUIDFromCgroup(in)
		if got != want || ok != (want != "") {
			t.Errorf("PodUIDFromCgroup(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

type attestor map[string]spiffeid.ID

func (a attestor) IdentityOf(uid string) (spiffeid.ID, error) {
	if id, ok := a[uid]; ok {
		return id, nil
	}
	return spiffeid.ID{}, ErrNoIdentity
}

func newSVID(t *testing.T, ca *spiffe.Authority, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, csr, err := spiffe.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.SignCSR(csr, id, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spiffe.NewSVID(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFetchX509SVID serves the API to this test process, attested as a pod
// through a fake /proc, and fetches with go-spiffe's client.
func TestFetchX509SVID(t *testing.T) {
	ca, err := spiffe.NewAuthority(td, time.Now(), 10*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mine := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/frontend")
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/backend")
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.Cert})
	src := svid.NewStatic(svid.Snapshot{
		SVIDs:  map[spiffeid.ID]*x509svid.SVID{mine: newSVID(t, ca, mine), other: newSVID(t, ca, other)},
		Bundle: bundle,
	})
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	const uid = "1b2c3d4e-0000-4000-8000-123456789abc"
	writeCgroup := func(content string) {
		p := filepath.Join(proc, fmt.Sprint(os.Getpid()))
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "cgroup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), src, attestor{uid: mine})
	s.procRoot = proc
	sock := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, sock) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	addr := workloadapi.WithAddr("unix://" + sock)

	// A process of no pod gets nothing.
	writeCgroup("0::/user.slice/session-1.scope\n")
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = workloadapi.FetchX509SVIDs(fctx, addr)
	fcancel()
	if err == nil {
		t.Fatal("a process of no pod got an SVID")
	}

	writeCgroup("0::/kubepods/pod" + uid + "/ctr\n")
	fctx, fcancel = context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	svids, err := workloadapi.FetchX509SVIDs(fctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(svids) != 1 || svids[0].ID != mine {
		t.Fatalf("got %d svids (%v), want exactly %s", len(svids), svids, mine)
	}
	b, err := workloadapi.FetchX509Bundles(fctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.GetX509BundleForTrustDomain(td); err != nil || !got.Equal(bundle) {
		t.Fatalf("bundle: %v", err)
	}

	// A renewed SVID is streamed.
	c, err := workloadapi.New(fctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	updates := make(chan *x509svid.SVID, 4)
	go func() {
		_ = c.WatchX509Context(fctx, watcher{updates})
	}()
	first := <-updates
	renewed := newSVID(t, ca, mine)
	src.Set(svid.Snapshot{SVIDs: map[spiffeid.ID]*x509svid.SVID{mine: renewed}, Bundle: bundle})
	select {
	case got := <-updates:
		if !got.Certificates[0].Equal(renewed.Certificates[0]) || got.Certificates[0].Equal(first.Certificates[0]) {
			t.Fatal("streamed SVID is not the renewed one")
		}
	case <-fctx.Done():
		t.Fatal("renewed SVID not streamed")
	}
}

type watcher struct{ ch chan<- *x509svid.SVID }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c.DefaultSVID() }
func (watcher) OnX509ContextWatchError(error)                    {}

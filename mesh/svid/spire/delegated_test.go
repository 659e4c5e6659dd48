package spire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	delegatedv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
)

// fakeAgent answers subscriptions as a SPIRE agent would: every entry whose
// selectors are a subset of the request's.
type fakeAgent struct {
	delegatedv1.UnimplementedDelegatedIdentityServer
	t       *testing.T
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	entries map[string][]*types.Selector // SPIFFE ID -> selectors
}

func (f *fakeAgent) issue(id string) *delegatedv1.X509SVIDWithKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca, &key.PublicKey, f.caKey)
	if err != nil {
		f.t.Fatal(err)
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	sid := spiffeid.RequireFromString(id)
	return &delegatedv1.X509SVIDWithKey{X509SvidKey: pk, X509Svid: &types.X509SVID{
		Id: &types.SPIFFEID{TrustDomain: sid.TrustDomain().Name(), Path: sid.Path()}, CertChain: [][]byte{der}}}
}

func (f *fakeAgent) SubscribeToX509SVIDs(req *delegatedv1.SubscribeToX509SVIDsRequest, s grpc.ServerStreamingServer[delegatedv1.SubscribeToX509SVIDsResponse]) error {
	have := map[string]bool{}
	for _, sel := range req.GetSelectors() {
		have[sel.GetType()+":"+sel.GetValue()] = true
	}
	var out []*delegatedv1.X509SVIDWithKey
	for id, sels := range f.entries {
		match := true
		for _, sel := range sels {
			match = match && have[sel.GetType()+":"+sel.GetValue()]
		}
		if match {
			out = append(out, f.issue(id))
		}
	}
	if err := s.Send(&delegatedv1.SubscribeToX509SVIDsResponse{X509Svids: out}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (f *fakeAgent) SubscribeToX509Bundles(_ *delegatedv1.SubscribeToX509BundlesRequest, s grpc.ServerStreamingServer[delegatedv1.SubscribeToX509BundlesResponse]) error {
	if err := s.Send(&delegatedv1.SubscribeToX509BundlesResponse{CaCertificates: map[string][]byte{
		"spiffe://example.org": f.ca.Raw, "spiffe://other.org": f.ca.Raw}}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func TestDelegated(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	sel := func(ns, sa string) []*types.Selector {
		return []*types.Selector{{Type: "k8s", Value: "ns:" + ns}, {Type: "k8s", Value: "sa:" + sa}}
	}
	fake := &fakeAgent{t: t, ca: ca, caKey: caKey, entries: map[string][]*types.Selector{
		"spiffe://example.org/ns/a/sa/x": sel("a", "x"),
		"spiffe://example.org/ns/b/sa/y": sel("b", "y"),
		// Matches a/x's selectors too, but is not the wanted ID.
		"spiffe://example.org/other": {{Type: "k8s", Value: "ns:a"}},
	}}
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	delegatedv1.RegisterDelegatedIdentityServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	d := NewDelegated(slog.New(slog.DiscardHandler), td, delegatedv1.NewDelegatedIdentityClient(conn))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ax := spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/x")
	by := spiffeid.RequireFromString("spiffe://example.org/ns/b/sa/y")
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !ok() {
			select {
			case <-d.Changed():
			case <-time.After(100 * time.Millisecond):
			case <-deadline:
				t.Fatalf("timed out waiting for %s; snapshot %+v", what, d.Snapshot())
			}
		}
	}
	d.SetWanted([]spiffeid.ID{ax, by})
	waitFor("both SVIDs and the bundle", func() bool {
		s := d.Snapshot()
		return len(s.SVIDs) == 2 && s.SVIDs[ax] != nil && s.SVIDs[by] != nil && s.Bundle != nil
	})
	if s := d.Snapshot(); s.SVIDs[ax].ID != ax || s.SVIDs[by].ID != by || s.Bundle.TrustDomain() != td {
		t.Errorf("snapshot holds the wrong identities: %+v", s)
	}
	d.SetWanted([]spiffeid.ID{by})
	if s := d.Snapshot(); len(s.SVIDs) != 1 || s.SVIDs[by] == nil {
		t.Errorf("after dropping %s: SVIDs %v, want only %s", ax, s.SVIDs, by)
	}
	if _, err := Selectors(spiffeid.RequireFromString("spiffe://example.org/ns/a")); err == nil {
		t.Error("Selectors accepted an ID that is not /ns/<ns>/sa/<sa>")
	}
}

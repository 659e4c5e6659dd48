package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestWriteSVIDPEM: -o pem is the SVID's chain, its key, then the bundle,
// and reads back as the same SVID.
func TestWriteSVIDPEM(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	id := spiffeid.RequireFromPath(td, "/ns/shop/sa/frontend")
	cert := func(tmpl, parent *x509.Certificate, pub, priv any) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	ca := cert(caTmpl, caTmpl, caKey.Public(), caKey)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := cert(&x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()}}, ca, key.Public(), caKey)
	x := &workloadapi.X509Context{
		SVIDs:   []*x509svid.SVID{{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}},
		Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{ca})),
	}
	var out bytes.Buffer
	if err := writeSVIDPEM(&globals{stdout: &out}, x); err != nil {
		t.Fatal(err)
	}
	certs, rest, _ := bytes.Cut(out.Bytes(), []byte("-----BEGIN PRIVATE KEY-----"))
	keyEnd := bytes.Index(rest, []byte("-----END PRIVATE KEY-----\n"))
	if keyEnd < 0 {
		t.Fatalf("no private key in:\n%s", out.String())
	}
	keyPEM := append([]byte("-----BEGIN PRIVATE KEY-----"), rest[:keyEnd+len("-----END PRIVATE KEY-----\n")]...)
	got, err := x509svid.Parse(certs, keyPEM)
	if err != nil {
		t.Fatalf("read back the SVID: %v\n%s", err, out.String())
	}
	if got.ID != id || !got.Certificates[0].Equal(leaf) {
		t.Errorf("read back %s", got.ID)
	}
	b, err := x509bundle.Parse(td, rest[keyEnd+len("-----END PRIVATE KEY-----\n"):])
	if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(ca) {
		t.Errorf("bundle: %v", err)
	}
}

package translate

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	xdstranslate "github.com/membrane-mesh/membrane/xds/translate"
	"github.com/membrane-mesh/membrane/xds/xdstest"
)

// TestEnvoyValidate loads every golden case's resources, as static
// resources of a bootstrap (route configurations inline, certificates as
// static secrets), into the pinned Envoy in validate mode: the translation
// must be something Envoy accepts, not only something that fits the API's
// schema.
func TestEnvoyValidate(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			// Static listeners cannot use RDS: each gets its route
			// configurations inline, so that Envoy parses them too.
			inline, err := xdstranslate.Resources{Listeners: c.Out.out.Listeners, Routes: c.Out.out.Routes}.InlineRoutes()
			if err != nil {
				t.Fatal(err)
			}
			if err := envoyValidate(t, envoy, &bootstrapv3.Bootstrap_StaticResources{
				Listeners: inline, Clusters: c.Out.out.Clusters, Secrets: c.Out.out.Secrets,
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestEnvoyAgreesOnKeyPairs: checkKeyPair refuses a certificate and key
// exactly where the pinned Envoy refuses to serve them, so a Secret Envoy
// would refuse becomes its listener's InvalidCertificateRef, not a
// rejection of every listener of the port.
func TestEnvoyAgreesOnKeyPairs(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	rsaKey := func(bits int) crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ecKey := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256 := ecKey(elliptic.P256())
	for _, tc := range []struct {
		name          string
		certKey, key  crypto.Signer
		wantInMessage string // "": accepted
	}{
		{"RSA 1024", rsaKey(1024), nil, "1024-bit RSA key"},
		{"RSA 2048", rsaKey(2048), nil, ""},
		{"ECDSA P-256", p256, nil, ""},
		{"ECDSA P-384", ecKey(elliptic.P384()), nil, ""},
		{"ECDSA P-521", ecKey(elliptic.P521()), nil, ""},
		{"Ed25519", ed, nil, ""},
		{"a key of another certificate", rsaKey(2048), p256, "tls.crt and tls.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key := cmp.Or(tc.key, tc.certKey)
			chain, keyPEM := selfSigned(t, tc.certKey, key)
			err := checkKeyPair(chain, keyPEM)
			switch {
			case tc.wantInMessage == "" && err != nil:
				t.Errorf("checkKeyPair: %v, want the pair accepted", err)
			case tc.wantInMessage != "" && (err == nil || !strings.Contains(err.Error(), tc.wantInMessage)):
				t.Errorf("checkKeyPair: %v, want an error containing %q", err, tc.wantInMessage)
			}
			envoyErr := envoyServes(t, envoy, chain, keyPEM)
			if (err == nil) != (envoyErr == nil) {
				t.Errorf("checkKeyPair: %v; Envoy: %v", err, envoyErr)
			}
		})
	}
}

// selfSigned returns a PEM certificate of certKey's public key and the
// PEM (PKCS #8) of key.
func selfSigned(t *testing.T, certKey, key crypto.Signer) (chain, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shop.example.com"},
		DNSNames: []string{"shop.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, certKey.Public(), certKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// envoyServes loads a listener serving chain and key into the pinned Envoy
// in validate mode: nil if Envoy takes it.
func envoyServes(t *testing.T, envoy string, chain, key []byte) error {
	t.Helper()
	tlsCtx, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chain}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := anypb.New(&tcpproxyv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	return envoyValidate(t, envoy, &bootstrapv3.Bootstrap_StaticResources{
		Listeners: []*listenerv3.Listener{{
			Name: "https",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
			}}},
			FilterChains: []*listenerv3.FilterChain{{
				TransportSocket: &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}},
				Filters:         []*listenerv3.Filter{{Name: tcpProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcp}}},
			}},
		}},
		Clusters: []*clusterv3.Cluster{{Name: "c"}},
	})
}

// envoyValidate loads the static resources into the pinned Envoy in
// validate mode (the certificates' SDS references made static).
func envoyValidate(t *testing.T, envoy string, static *bootstrapv3.Bootstrap_StaticResources) error {
	t.Helper()
	return xdstest.EnvoyValidate(t, envoy, &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: "test-node", Cluster: "membrane"},
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		}}}},
		StaticResources: static,
	})
}

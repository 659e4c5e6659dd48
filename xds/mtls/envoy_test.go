package mtls

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	internallistenerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/bootstrap/internal_listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/membrane-mesh/membrane/e2e/testenv"
	"github.com/membrane-mesh/membrane/xds/translate"
	"github.com/membrane-mesh/membrane/xds/xdstest"
)

// TestEnvoyValidate loads every golden case's resources, with the secrets
// of a test CA for every identity they name, into the pinned Envoy in
// validate mode. The SDS references are made static (the secrets are the
// bootstrap's), so Envoy checks the secrets too, the SPIFFE validator's
// configuration included.
func TestEnvoyValidate(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	internalListener, err := marshalAny(&internallistenerv3.InternalListener{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			ca := newTestCA(t, "cluster.local")
			svids := map[spiffeid.ID]*x509svid.SVID{}
			for _, o := range c.In.Outbound {
				svids[o.SourceID] = ca.svid(t, o.SourceID)
			}
			for _, in := range c.In.Inbound {
				svids[in.DestinationID] = ca.svid(t, in.DestinationID)
			}
			secrets, err := Secrets(svids, ca.bundle())
			if err != nil {
				t.Fatal(err)
			}
			b := &bootstrapv3.Bootstrap{
				Node:  &corev3.Node{Id: "test-node", Cluster: "membrane"},
				Admin: &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", 0)},
				// The node Envoy's bootstrap enables internal listeners
				// (the tunnels' L7 policing).
				BootstrapExtensions: []*corev3.TypedExtensionConfig{{Name: "envoy.bootstrap.internal_listener", TypedConfig: internalListener}},
				StaticResources: &bootstrapv3.Bootstrap_StaticResources{
					Listeners: inlineRoutes(t, c.Out), Clusters: c.Out.Clusters, Secrets: secrets,
				},
			}
			if c.In.AccessLogCluster != "" {
				b.StaticResources.Clusters = append(b.StaticResources.Clusters, deliverCluster())
				b.StaticResources.Clusters[len(b.StaticResources.Clusters)-1].Name = c.In.AccessLogCluster
			}
			if err := xdstest.EnvoyValidate(t, envoy, b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSecrets: one TLS certificate per SVID named by its ID, with the whole
// chain and the key, and the bundle as the SPIFFE validator's trust domain.
func TestSecrets(t *testing.T) {
	ca := newTestCA(t, "example.org")
	a := spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/x")
	b := spiffeid.RequireFromString("spiffe://example.org/ns/b/sa/y")
	got, err := Secrets(map[spiffeid.ID]*x509svid.SVID{b: ca.svid(t, b), a: ca.svid(t, a)}, ca.bundle())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != a.String() || got[1].Name != b.String() || got[2].Name != BundleSecret {
		t.Fatalf("secret names: %v", names(got))
	}
	tc := got[0].GetTlsCertificate()
	if !strings.Contains(string(tc.GetCertificateChain().GetInlineBytes()), "BEGIN CERTIFICATE") ||
		!strings.Contains(string(tc.GetPrivateKey().GetInlineBytes()), "PRIVATE KEY") {
		t.Fatal("the certificate secret lacks the chain or the key")
	}
	v := got[2].GetValidationContext().GetCustomValidatorConfig()
	var cfg tlsv3.SPIFFECertValidatorConfig
	if v.GetName() != "envoy.tls.cert_validator.spiffe" || v.GetTypedConfig().UnmarshalTo(&cfg) != nil {
		t.Fatalf("validation context: %v", v)
	}
	if len(cfg.TrustDomains) != 1 || cfg.TrustDomains[0].Name != "example.org" ||
		!strings.Contains(string(cfg.TrustDomains[0].TrustBundle.GetInlineBytes()), "BEGIN CERTIFICATE") {
		t.Fatalf("SPIFFE validator: %v", &cfg)
	}
	// No bundle, no bundle secret.
	got, err = Secrets(nil, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("no identities: %v, %v", names(got), err)
	}
}

func names(ss []*tlsv3.Secret) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

// inlineRoutes are res's listeners with their route configurations inline,
// for a static bootstrap.
func inlineRoutes(t *testing.T, res Resources) []*listenerv3.Listener {
	t.Helper()
	ls, err := translate.Resources{Listeners: res.Listeners, Routes: res.Routes}.InlineRoutes()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

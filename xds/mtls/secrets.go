package mtls

import (
	"cmp"
	"encoding/pem"
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Secrets are the SDS secrets of a node's identities: one TLS certificate
// per SVID, named by its SPIFFE ID, and BundleSecret, a validation context
// with Envoy's SPIFFE certificate validator trusting bundle. A nil bundle
// gives no BundleSecret. Every key is copied into the secret: the result
// must not be logged.
func Secrets(svids map[spiffeid.ID]*x509svid.SVID, bundle *x509bundle.Bundle) ([]*tlsv3.Secret, error) {
	ids := make([]spiffeid.ID, 0, len(svids))
	for id := range svids {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return cmp.Compare(a.String(), b.String()) })
	var out []*tlsv3.Secret
	for _, id := range ids {
		certs, key, err := svids[id].Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode the SVID of %s: %w", id, err)
		}
		out = append(out, &tlsv3.Secret{
			Name: id.String(),
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(certs),
				PrivateKey:       inline(key),
			}},
		})
	}
	if bundle != nil {
		var pems []byte
		for _, c := range bundle.X509Authorities() {
			pems = append(pems, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		if len(pems) == 0 {
			return nil, fmt.Errorf("trust bundle of %s: no X.509 authority", bundle.TrustDomain())
		}
		v, err := marshalAny(&tlsv3.SPIFFECertValidatorConfig{
			TrustDomains: []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{{
				Name:        bundle.TrustDomain().Name(),
				TrustBundle: inline(pems),
			}},
		})
		if err != nil {
			return nil, err
		}
		out = append(out, &tlsv3.Secret{
			Name: BundleSecret,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CustomValidatorConfig: &corev3.TypedExtensionConfig{
					Name:        "envoy.tls.cert_validator.spiffe",
					TypedConfig: v,
				},
			}},
		})
	}
	return out, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

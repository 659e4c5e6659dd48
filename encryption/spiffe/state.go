package spiffe

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Keys of the CA Secret's data.
const (
	SecretCACert   = "ca.crt"      // the active CA: signs SVIDs
	SecretCAKey    = "ca.key"      // its key, PKCS#8
	SecretNextCert = "next.crt"    // a prepared CA: trusted, signs once activated
	SecretNextKey  = "next.key"    // its key
	SecretRetired  = "retired.crt" // previous CAs, trusted until their SVIDs expired
	// BundleKey is the key of the trust bundle (PEM) in the published
	// ConfigMap.
	BundleKey = "bundle.crt"
)

// PEM headers of the CA Secret.
const (
	headerActivateAt   = "Activate-At"   // on next.crt: when it becomes active
	headerTrustedUntil = "Trusted-Until" // on retired.crt blocks
)

// AnnotationRotate on the CA Secret requests a rotation when its value
// differs from AnnotationRotated's (any value, e.g. a timestamp).
const (
	AnnotationRotate  = "spiffe.membrane.io/rotate"
	AnnotationRotated = "spiffe.membrane.io/rotated"
)

// Retired is a CA that no longer signs but whose SVIDs may still be in use.
type Retired struct {
	Cert         *x509.Certificate
	TrustedUntil time.Time
}

// State is the CA's persistent state (the Secret).
type State struct {
	Active     *Authority
	Next       *Authority // nil: no rotation in progress
	ActivateAt time.Time  // when Next becomes Active
	Retired    []Retired
}

// Policy is how the CA rotates.
type Policy struct {
	// CATTL is how long a CA certificate is valid.
	CATTL time.Duration
	// MaxSVIDTTL is the longest SVID lifetime issued: a retired CA stays
	// in the bundle this long after it stopped signing.
	MaxSVIDTTL time.Duration
	// Propagation is how long a new CA is in the bundle before it signs,
	// so that every agent trusts it before it meets an SVID signed by it.
	Propagation time.Duration
}

// Validate checks the policy.
func (p Policy) Validate() error {
	var errs []error
	if p.MaxSVIDTTL < time.Minute {
		errs = append(errs, fmt.Errorf("svid ttl %s: must be at least 1m", p.MaxSVIDTTL))
	}
	if p.CATTL < 4*(p.MaxSVIDTTL+p.Propagation) {
		errs = append(errs, fmt.Errorf("ca ttl %s: must be at least 4 times the svid ttl plus the propagation delay (%s)", p.CATTL, 4*(p.MaxSVIDTTL+p.Propagation)))
	}
	if p.Propagation < 0 {
		errs = append(errs, fmt.Errorf("propagation delay %s: must not be negative", p.Propagation))
	}
	return errors.Join(errs...)
}

// Step moves the CA state forward to now: it creates the first CA, prepares
// a new one when rotate is set or the active one is two thirds through its
// life, activates a prepared one once it propagated, and drops retired CAs
// whose SVIDs all expired. It returns whether anything changed.
func Step(s State, td spiffeid.TrustDomain, p Policy, now time.Time, rotate bool) (State, bool, error) {
	changed := false
	if s.Active == nil {
		a, err := NewAuthority(td, now, p.CATTL)
		if err != nil {
			return s, false, err
		}
		return State{Active: a}, true, nil
	}
	life := s.Active.Cert.NotAfter.Sub(s.Active.Cert.NotBefore)
	aging := now.After(s.Active.Cert.NotBefore.Add(life * 2 / 3))
	if s.Next == nil && (rotate || aging) {
		a, err := NewAuthority(td, now, p.CATTL)
		if err != nil {
			return s, false, err
		}
		s.Next, s.ActivateAt, changed = a, now.Add(p.Propagation), true
	}
	if s.Next != nil && !now.Before(s.ActivateAt) {
		s.Retired = append(slices.Clone(s.Retired), Retired{Cert: s.Active.Cert, TrustedUntil: now.Add(p.MaxSVIDTTL)})
		s.Active, s.Next, s.ActivateAt, changed = s.Next, nil, time.Time{}, true
	}
	kept := s.Retired[:0:0]
	for _, r := range s.Retired {
		if now.Before(r.TrustedUntil) && now.Before(r.Cert.NotAfter) {
			kept = append(kept, r)
		} else {
			changed = true
		}
	}
	s.Retired = kept
	return s, changed, nil
}

// Bundle is the trust bundle of the state: the active, prepared and
// retired CAs.
func (s State) Bundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	b := x509bundle.New(td)
	if s.Active != nil {
		b.AddX509Authority(s.Active.Cert)
	}
	if s.Next != nil {
		b.AddX509Authority(s.Next.Cert)
	}
	for _, r := range s.Retired {
		b.AddX509Authority(r.Cert)
	}
	return b
}

// EncodeBundle is b in PEM.
func EncodeBundle(b *x509bundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Encode is the Secret data of s.
func (s State) Encode() (map[string][]byte, error) {
	if s.Active == nil {
		return nil, errors.New("encode CA state: no active CA")
	}
	data := map[string][]byte{}
	if err := putAuthority(data, SecretCACert, SecretCAKey, s.Active, nil); err != nil {
		return nil, err
	}
	if s.Next != nil {
		if err := putAuthority(data, SecretNextCert, SecretNextKey, s.Next, map[string]string{headerActivateAt: s.ActivateAt.UTC().Format(time.RFC3339)}); err != nil {
			return nil, err
		}
	}
	var retired []byte
	for _, r := range s.Retired {
		retired = append(retired, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{headerTrustedUntil: r.TrustedUntil.UTC().Format(time.RFC3339)}, Bytes: r.Cert.Raw})...)
	}
	if len(retired) > 0 {
		data[SecretRetired] = retired
	}
	return data, nil
}

func putAuthority(data map[string][]byte, certKey, keyKey string, a *Authority, headers map[string]string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(a.Key)
	if err != nil {
		return fmt.Errorf("encode CA state: %s: %w", keyKey, err)
	}
	data[certKey] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: headers, Bytes: a.Cert.Raw})
	data[keyKey] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return nil
}

// DecodeState parses the CA Secret's data. Empty data is the zero State.
func DecodeState(data map[string][]byte) (State, error) {
	var s State
	if len(data[SecretCACert]) == 0 && len(data[SecretCAKey]) == 0 {
		return s, nil
	}
	var err error
	if s.Active, _, err = parseAuthority(data, SecretCACert, SecretCAKey); err != nil {
		return State{}, err
	}
	if len(data[SecretNextCert]) > 0 {
		var headers map[string]string
		if s.Next, headers, err = parseAuthority(data, SecretNextCert, SecretNextKey); err != nil {
			return State{}, err
		}
		if s.ActivateAt, err = time.Parse(time.RFC3339, headers[headerActivateAt]); err != nil {
			return State{}, fmt.Errorf("CA secret %s: header %s: %w", SecretNextCert, headerActivateAt, err)
		}
	}
	rest := data[SecretRetired]
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return State{}, fmt.Errorf("CA secret %s: %w", SecretRetired, err)
		}
		until, err := time.Parse(time.RFC3339, b.Headers[headerTrustedUntil])
		if err != nil {
			return State{}, fmt.Errorf("CA secret %s: header %s: %w", SecretRetired, headerTrustedUntil, err)
		}
		s.Retired = append(s.Retired, Retired{Cert: c, TrustedUntil: until})
	}
	return s, nil
}

func parseAuthority(data map[string][]byte, certKey, keyKey string) (*Authority, map[string]string, error) {
	cb, _ := pem.Decode(data[certKey])
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("CA secret %s: no PEM certificate", certKey)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA secret %s: %w", certKey, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("CA secret %s: not a CA certificate", certKey)
	}
	kb, _ := pem.Decode(data[keyKey])
	if kb == nil {
		return nil, nil, fmt.Errorf("CA secret %s: no PEM key", keyKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA secret %s: %w", keyKey, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("CA secret %s: not a signing key", keyKey)
	}
	if !publicKeyEqual(signer.Public(), cert.PublicKey) {
		return nil, nil, fmt.Errorf("CA secret %s: does not match %s", keyKey, certKey)
	}
	return &Authority{Cert: cert, Key: signer}, cb.Headers, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// Package wireguard encrypts node-to-node pod traffic with WireGuard: typed
// keys and their file on disk, the desired peer configuration derived from
// the cluster's nodes, the difference to what a device holds, and the device
// itself (the kernel's, or an embedded userspace one) with its routes.
//
// Like tailscale's wgengine, a Manager takes the whole desired
// configuration and returns ErrNoChanges when the device already matches.
package wireguard

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// KeyLen is the length of WireGuard keys in bytes.
const KeyLen = 32

// incomparable makes a struct that embeds it a compile error under ==.
type incomparable [0]func()

// PrivateKey is a node's WireGuard private key. It cannot be compared with
// ==, and printing or logging it shows "[redacted]".
type PrivateKey struct {
	_ incomparable
	k [KeyLen]byte
}

// GeneratePrivateKey returns a new random, clamped Curve25519 key.
func GeneratePrivateKey() (PrivateKey, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate WireGuard private key: %w", err)
	}
	return PrivateKey{k: k}, nil
}

// IsZero reports whether k is the zero value (no key).
func (k PrivateKey) IsZero() bool { return k.k == [KeyLen]byte{} }

// Equal compares in constant time.
func (k PrivateKey) Equal(o PrivateKey) bool {
	return subtle.ConstantTimeCompare(k.k[:], o.k[:]) == 1
}

// Public derives the public key.
func (k PrivateKey) Public() PublicKey {
	var p PublicKey
	pub, err := curve25519.X25519(k.k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, which a clamped key cannot give.
		return p
	}
	copy(p.k[:], pub)
	return p
}

// Format prints "[redacted]" whatever the verb.
func (k PrivateKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[redacted]") }

// LogValue keeps the key out of structured logs.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText refuses: a private key is never encoded into an API object.
func (k PrivateKey) MarshalText() ([]byte, error) {
	return nil, errors.New("a WireGuard private key is never marshalled")
}

func (k PrivateKey) wg() wgtypes.Key { return wgtypes.Key(k.k) }

// PublicKey is a node's WireGuard public key, as published on its Node.
// It cannot be compared with ==; it prints as its fingerprint.
type PublicKey struct {
	_ incomparable
	k [KeyLen]byte
}

// ParsePublicKey parses the base64 form (as `wg pubkey` prints it and as the
// Node annotation holds it).
func ParsePublicKey(s string) (PublicKey, error) {
	var p PublicKey
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return p, fmt.Errorf("not base64: %w", err)
	}
	if len(raw) != KeyLen {
		return p, fmt.Errorf("%d bytes, want %d", len(raw), KeyLen)
	}
	copy(p.k[:], raw)
	if p.IsZero() {
		return p, errors.New("all-zero key")
	}
	return p, nil
}

func publicFromWG(k wgtypes.Key) PublicKey { return PublicKey{k: k} }

// IsZero reports whether p is the zero value (no key).
func (p PublicKey) IsZero() bool { return p.k == [KeyLen]byte{} }

// Equal reports whether two public keys are the same.
func (p PublicKey) Equal(o PublicKey) bool { return p.k == o.k }

// Encode returns the base64 form published on the Node.
func (p PublicKey) Encode() string { return base64.StdEncoding.EncodeToString(p.k[:]) }

// Fingerprint is a short, stable identifier of the key for status output
// and logs: "sha256:" and the first 8 bytes of its SHA-256 in hex.
func (p PublicKey) Fingerprint() string {
	if p.IsZero() {
		return ""
	}
	sum := sha256.Sum256(p.k[:])
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// Format prints the fingerprint whatever the verb.
func (p PublicKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, p.Fingerprint()) }

// LogValue logs the fingerprint.
func (p PublicKey) LogValue() slog.Value { return slog.StringValue(p.Fingerprint()) }

func (p PublicKey) wg() wgtypes.Key { return wgtypes.Key(p.k) }

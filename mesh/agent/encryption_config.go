package agent

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
)

// EncryptionWireGuard is the one --encryption-type there is.
const EncryptionWireGuard = "wireguard"

// minRotationPeriod keeps a typo from rotating keys in a tight loop.
const minRotationPeriod = 10 * time.Second

func (c Config) validateEncryption() []error {
	var errs []error
	if c.EncryptionType != "" && c.EncryptionType != EncryptionWireGuard {
		errs = append(errs, fmt.Errorf("--encryption-type %q: must be %s", c.EncryptionType, EncryptionWireGuard))
	}
	if _, err := c.wireGuardBackend(); err != nil {
		errs = append(errs, fmt.Errorf("--wireguard-backend %w", err))
	}
	if c.KeyRotationPeriod != 0 && c.KeyRotationPeriod < minRotationPeriod {
		errs = append(errs, fmt.Errorf("--encryption-key-rotation-period %s: must be 0 (never) or at least %s", c.KeyRotationPeriod, minRotationPeriod))
	}
	if c.EnableEncryption && (c.StateDir == "" || !filepath.IsAbs(c.StateDir)) {
		errs = append(errs, fmt.Errorf("--state-dir %q: must be an absolute directory (it keeps the WireGuard private key)", c.StateDir))
	}
	return errs
}

// wireGuardBackend is the chosen device backend; empty means auto.
func (c Config) wireGuardBackend() (wireguard.Backend, error) {
	if c.WireGuardBackend == "" {
		return wireguard.BackendAuto, nil
	}
	return wireguard.ParseBackend(c.WireGuardBackend)
}

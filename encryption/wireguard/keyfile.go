package wireguard

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/membrane-mesh/membrane/mesh/statefile"
)

// KeyFileName is the private key's file below the agent's state directory.
const KeyFileName = "wireguard.key"

// KeyFile keeps the node's private key on disk: base64 (as `wg genkey`
// writes it), mode 0600, in a 0700 directory, replaced atomically.
type KeyFile struct {
	Path string
}

// NewKeyFile returns the key file below stateDir.
func NewKeyFile(stateDir string) KeyFile {
	return KeyFile{Path: filepath.Join(stateDir, KeyFileName)}
}

// KeyFileInfo says what LoadOrCreate had to do.
type KeyFileInfo struct {
	// Created: there was no key; a new one was generated and stored.
	Created bool
	// Tightened: the file was readable by others; its mode is now 0600.
	Tightened bool
}

// LoadOrCreate returns the stored key, or generates and stores a new one
// when there is none. A file that exists but holds no valid key is an
// error: it is never silently replaced.
func (f KeyFile) LoadOrCreate() (PrivateKey, KeyFileInfo, error) {
	var info KeyFileInfo
	st, err := os.Stat(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := GeneratePrivateKey()
		if err != nil {
			return PrivateKey{}, info, err
		}
		if err := f.Store(k); err != nil {
			return PrivateKey{}, info, err
		}
		info.Created = true
		return k, info, nil
	}
	if err != nil {
		return PrivateKey{}, info, fmt.Errorf("WireGuard key file %s: %w", f.Path, err)
	}
	if !st.Mode().IsRegular() {
		return PrivateKey{}, info, fmt.Errorf("WireGuard key file %s: not a regular file", f.Path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(f.Path, 0o600); err != nil {
			return PrivateKey{}, info, fmt.Errorf("WireGuard key file %s: restrict mode to 0600: %w", f.Path, err)
		}
		info.Tightened = true
	}
	raw, err := os.ReadFile(f.Path)
	if err != nil {
		return PrivateKey{}, info, fmt.Errorf("read WireGuard key file %s: %w", f.Path, err)
	}
	k, err := decodePrivateKey(raw)
	if err != nil {
		return PrivateKey{}, info, fmt.Errorf("WireGuard key file %s: %w", f.Path, err)
	}
	return k, info, nil
}

func decodePrivateKey(raw []byte) (PrivateKey, error) {
	var k PrivateKey
	b, err := base64.StdEncoding.Strict().DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil || len(b) != KeyLen {
		return k, errors.New("does not hold a base64 WireGuard key")
	}
	copy(k.k[:], b)
	clear(b)
	if k.IsZero() {
		return k, errors.New("holds an all-zero key")
	}
	return k, nil
}

// Store writes k atomically (statefile.Write): a crash leaves either the
// old key or the new one.
func (f KeyFile) Store(k PrivateKey) error {
	buf := make([]byte, base64.StdEncoding.EncodedLen(KeyLen)+1)
	base64.StdEncoding.Encode(buf, k.k[:])
	buf[len(buf)-1] = '\n'
	err := statefile.Write(f.Path, buf)
	clear(buf)
	if err != nil {
		return fmt.Errorf("store WireGuard key: %w", err)
	}
	return nil
}

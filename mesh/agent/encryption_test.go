package agent

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
)

func TestEncryptionConfig(t *testing.T) {
	base := Config{NodeName: "n1", BPFPinDir: "/sys/fs/bpf/m", CgroupPath: "/sys/fs/cgroup", APIAddr: ":9890"}
	if err := base.Validate(); err != nil {
		t.Fatalf("encryption off: %v", err)
	}
	on := base
	on.EnableEncryption, on.EncryptionType, on.StateDir, on.WireGuardBackend = true, "wireguard", "/var/lib/membrane/agent", "auto"
	if err := on.Validate(); err != nil {
		t.Fatalf("encryption on: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"--encryption-type":                func(c *Config) { c.EncryptionType = "ipsec" },
		"--state-dir":                      func(c *Config) { c.StateDir = "relative" },
		"--wireguard-backend":              func(c *Config) { c.WireGuardBackend = "userspace" },
		"--encryption-key-rotation-period": func(c *Config) { c.KeyRotationPeriod = time.Second },
	} {
		c := on
		mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestUntilRotation(t *testing.T) {
	dir := t.TempDir()
	e := &encryption{cfg: Config{KeyRotationPeriod: time.Hour}, keyFile: wireguard.NewKeyFile(dir)}
	if d := e.untilRotation(); d != time.Hour {
		t.Errorf("no key file: %s", d)
	}
	k, err := wireguard.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.keyFile.Store(k); err != nil {
		t.Fatal(err)
	}
	// The age counts from the file, so a restart does not postpone it.
	old := time.Now().Add(-50 * time.Minute)
	if err := os.Chtimes(e.keyFile.Path, old, old); err != nil {
		t.Fatal(err)
	}
	if d := e.untilRotation(); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("50 min old key, 1 h period: %s", d)
	}
	old = time.Now().Add(-2 * time.Hour)
	_ = os.Chtimes(e.keyFile.Path, old, old)
	if d := e.untilRotation(); d != time.Second {
		t.Errorf("overdue: %s", d)
	}
	e.cfg.KeyRotationPeriod = 0
	if d := e.untilRotation(); d < 100*365*24*time.Hour {
		t.Errorf("never: %s", d)
	}
}

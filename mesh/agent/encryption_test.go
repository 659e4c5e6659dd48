package agent

import (
	"fmt"
	"net/netip"
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

func TestMeshPeers(t *testing.T) {
	key := func() string {
		k, err := wireguard.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.Public().Encode()
	}
	selfKey, err := wireguard.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	node := func(name, ip, cidr, key string) wireguard.Node {
		return wireguard.Node{Name: name, IP: netip.MustParseAddr(ip), PodCIDRs: []netip.Prefix{netip.MustParsePrefix(cidr)}, Key: key}
	}
	n2Key := key()
	local := []wireguard.Node{
		node("n1", "198.18.1.1", "10.1.0.0/24", selfKey.Public().Encode()),
		node("n2", "198.18.1.2", "10.1.1.0/24", n2Key),
		node("n3", "198.18.1.3", "10.1.2.0/24", ""), // encryption not up there yet
	}
	remote := []wireguard.Node{
		node("a/w1", "198.18.2.1", "10.2.0.0/24", key()),
		node("a/w2", "198.18.2.2", "10.2.1.0/24", ""),          // its cluster runs without encryption
		node("a/w3", "198.18.2.3", "10.1.2.0/25", key()),       // claims a local PodCIDR (sorts before n3)
		node("a/w4", "198.18.2.4", "10.2.2.0/24", n2Key),       // claims a local key (sorts before n2)
		node("a/w5", "198.18.2.5", "10.2.3.0/24", "not-a-key"), // checked like a local key
	}
	peers, bad := meshPeers("n1", selfKey.Public(), local, remote)
	got := map[string]string{}
	for _, p := range peers {
		got[p.Node] = fmt.Sprint(p.Endpoint, p.AllowedIPs)
	}
	want := map[string]string{
		"n2":   "198.18.1.2:51871 [10.1.1.0/24]",
		"a/w1": "198.18.2.1:51871 [10.2.0.0/24]",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("peers = %v, want %v", got, want)
	}
	reasons := map[string]string{}
	for _, s := range bad {
		reasons[s.Node] = s.Reason
	}
	for n, sub := range map[string]string{
		"a/w2": "no WireGuard key",
		"a/w3": "overlaps 10.1.2.0/24 of this cluster",
		"a/w4": "already used by local node n2",
		"a/w5": wireguard.AnnotationPublicKey,
	} {
		if !strings.Contains(reasons[n], sub) {
			t.Errorf("%s skipped for %q, want %q in the reason", n, reasons[n], sub)
		}
	}
	if len(bad) != 4 {
		t.Errorf("skipped = %v, want 4", bad)
	}
}

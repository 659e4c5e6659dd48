package wireguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustKey(t *testing.T) PrivateKey {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPrivateKeyIsNeverPrinted(t *testing.T) {
	k := mustKey(t)
	raw := k.wg().String() // base64, what must never show
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("key", "key", k)
	for _, out := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k, k, k), logs.String()} {
		if strings.Contains(out, raw) || !strings.Contains(out, "redacted") {
			t.Errorf("private key printed: %s", out)
		}
	}
	if _, err := json.Marshal(struct{ K PrivateKey }{k}); err == nil {
		t.Error("a private key marshalled to JSON")
	}
}

func TestPublicKeyParseAndFingerprint(t *testing.T) {
	k := mustKey(t)
	pub := k.Public()
	back, err := ParsePublicKey(pub.Encode())
	if err != nil || !back.Equal(pub) {
		t.Fatalf("round trip: %v", err)
	}
	if fp := pub.Fingerprint(); !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+16 || fmt.Sprint(pub) != fp {
		t.Errorf("fingerprint %q, printed %q", fp, fmt.Sprint(pub))
	}
	if strings.Contains(fmt.Sprintf("%v %s", pub, pub), pub.Encode()) {
		t.Error("public key printed in full")
	}
	for _, bad := range []string{"", "garbage!", "c2hvcnQ=", strings.Repeat("A", 43) + "=", pub.Encode() + "AA", " " + pub.Encode()} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q): no error", bad)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f := NewKeyFile(dir)
	k1, info, err := f.LoadOrCreate()
	if err != nil || !info.Created {
		t.Fatalf("create: %v %+v", err, info)
	}
	st, err := os.Stat(f.Path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v: %v", st.Mode(), err)
	}
	if d, _ := os.Stat(dir); d.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %v", d.Mode())
	}
	k2, info, err := f.LoadOrCreate()
	if err != nil || info.Created || !k2.Equal(k1) {
		t.Fatalf("reload: %v %+v equal=%v", err, info, k2.Equal(k1))
	}
	// Too open: tightened, same key.
	if err := os.Chmod(f.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	k3, info, err := f.LoadOrCreate()
	if err != nil || !info.Tightened || !k3.Equal(k1) {
		t.Fatalf("tighten: %v %+v", err, info)
	}
	if st, _ := os.Stat(f.Path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode after tighten %v", st.Mode())
	}
	// Rotation replaces it atomically, with no temporary file left.
	k4 := mustKey(t)
	if err := f.Store(k4); err != nil {
		t.Fatal(err)
	}
	k5, _, err := f.LoadOrCreate()
	if err != nil || !k5.Equal(k4) || k5.Equal(k1) {
		t.Fatalf("after store: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in key dir: %v", entries)
	}
	// Garbage is an error, never replaced silently.
	if err := os.WriteFile(f.Path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.LoadOrCreate(); err == nil {
		t.Fatal("garbage key file accepted")
	}
	if raw, _ := os.ReadFile(f.Path); string(raw) != "not a key\n" {
		t.Error("garbage key file was overwritten")
	}
}

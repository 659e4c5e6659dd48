package agent

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/encryption/wireguard"
	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// TestCleanupStateAndAnnotations runs Cleanup in a fresh network namespace
// on a node whose datapath is already gone: it removes the key file, the
// stale API socket, their directories when empty, the CNI config and the
// agent's Node annotations, and leaves other annotations, other CNI configs
// and the plugin binary; a second run logs nothing.
// (Each datapath package tests its own Cleanup; the e2e test the whole.)
func TestCleanupStateAndAnnotations(t *testing.T) {
	ns := netns.ForTest(t)
	root := t.TempDir()
	cfg := Config{
		NodeName:  "node1",
		BPFPinDir: filepath.Join(root, "bpf", "membrane"), // missing: nothing pinned
		StateDir:  filepath.Join(root, "state"),
		APISocket: filepath.Join(root, "run", "agent", "api.sock"),
		CNI:       CNIConfig{ConfDir: filepath.Join(root, "net.d"), ConfName: DefaultCNIConfName, BinDir: filepath.Join(root, "bin")},
	}
	for _, f := range []string{filepath.Join(cfg.CNI.ConfDir, DefaultCNIConfName), filepath.Join(cfg.CNI.ConfDir, "10-other.conflist"), filepath.Join(cfg.CNI.BinDir, "membrane-cni")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k, err := wireguard.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := wireguard.NewKeyFile(cfg.StateDir).Store(k); err != nil {
		t.Fatal(err)
	}
	// The learned DNS names, as the agent keeps them.
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "fqdn-names.json"), []byte(`{"version":1,"entries":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The proxy's groups, as the agent keeps them.
	if err := saveProxyGroups(cfg.proxyGroupsFile(), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.APISocket), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.APISocket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Annotations: map[string]string{
		wireguard.AnnotationPublicKey:    "key",
		agenttunnel.CertAnnotation:       "fingerprint",
		v1alpha1.AnnotationProxyRejected: "policy",
		"example.com/other":              "kept",
	}}})

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	run := func() {
		t.Helper()
		if err := netns.Do(ns, func() error { return Cleanup(t.Context(), log, cfg, client) }); err != nil {
			t.Fatal(err)
		}
	}
	run()
	t.Logf("Cleanup:\n%s", logs.String())
	for _, p := range []string{cfg.StateDir, cfg.APISocket, filepath.Dir(cfg.APISocket)} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s after Cleanup: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "run")); err != nil {
		t.Errorf("parent of the socket directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.CNI.ConfDir, DefaultCNIConfName)); !os.IsNotExist(err) {
		t.Errorf("CNI config after Cleanup: %v", err)
	}
	for _, kept := range []string{filepath.Join(cfg.CNI.ConfDir, "10-other.conflist"), filepath.Join(cfg.CNI.BinDir, "membrane-cni")} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("%s after Cleanup: %v, want it kept", kept, err)
		}
	}
	if c := strings.Count(logs.String(), "removed CNI config"); c != 1 {
		t.Errorf("logged %d removed CNI configs, want 1", c)
	}
	n, err := client.CoreV1().Nodes().Get(t.Context(), "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Annotations) != 1 || n.Annotations["example.com/other"] != "kept" {
		t.Errorf("annotations after Cleanup: %v, want only example.com/other", n.Annotations)
	}
	if c := strings.Count(logs.String(), "removed node annotation"); c != 3 {
		t.Errorf("logged %d removed annotations, want 3", c)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("Cleanup warned:\n%s", logs.String())
	}

	logs.Reset()
	run()
	if logs.Len() != 0 {
		t.Errorf("second Cleanup logged:\n%s", logs.String())
	}
}

func TestValidateCleanup(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{BPFPinDir: "relative"}, "--bpf-pin-dir"},
		{Config{BPFPinDir: "/sys/fs/bpf/membrane", StateDir: "state"}, "--state-dir"},
		{Config{BPFPinDir: "/sys/fs/bpf/membrane", APISocket: "api.sock"}, "--api-socket"},
		{Config{BPFPinDir: "/sys/fs/bpf/membrane", CNI: CNIConfig{ConfDir: "net.d", ConfName: DefaultCNIConfName}}, "--cni-conf-dir"},
		{Config{BPFPinDir: "/sys/fs/bpf/membrane", CNI: CNIConfig{ConfDir: "/etc/cni/net.d", ConfName: "../x.conflist"}}, "--cni-conf-name"},
	} {
		if err := c.cfg.ValidateCleanup(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ValidateCleanup(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	if err := (Config{BPFPinDir: "/sys/fs/bpf/membrane"}).ValidateCleanup(); err != nil {
		t.Errorf("ValidateCleanup of a pin dir only: %v", err)
	}
	// The CNI config without --api-socket: cleanup removes it all the same.
	if err := (Config{BPFPinDir: "/sys/fs/bpf/membrane", CNI: CNIConfig{ConfDir: "/etc/cni/net.d", ConfName: DefaultCNIConfName}}).ValidateCleanup(); err != nil {
		t.Errorf("ValidateCleanup with a CNI config: %v", err)
	}
}

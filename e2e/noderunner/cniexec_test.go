package noderunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// TestMain lets the test binary act as the container init that
// runtime.Run re-executes.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == runtime.InitArg {
		err := runtime.Init(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(runtime.ExitStatus(err))
	}
	os.Exit(m.Run())
}

// A plugin runs with the node's files: it is found in the node's
// /opt/cni/bin, and the node paths it writes are the node's directories.
func TestNodeExec(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces for the CNI plugin")
	dir := t.TempDir()
	bin, lib, netnsDir := filepath.Join(dir, "bin"), filepath.Join(dir, "lib"), filepath.Join(dir, "netns")
	for _, d := range []string{bin, lib, netnsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "fakecni"), "./testdata/fakecni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fakecni: %v\n%s", err, out)
	}
	cfg := Config{StateDir: filepath.Join(dir, "state"), PodNetnsDir: netnsDir, HostPaths: []HostPathMapping{
		{Path: "/opt/cni/bin", Source: bin},
		{Path: "/var/lib/membrane", Source: lib},
		{Path: "/sys/fs/bpf", Source: filepath.Join(dir, "missing")},
	}}
	e, err := newNodeExec(cfg, runtime.New(slog.New(slog.NewTextHandler(io.Discard, nil)), ""))
	if err != nil {
		t.Fatal(err)
	}

	path, err := e.FindInPath("fakecni", []string{"/usr/libexec/cni", "/opt/cni/bin"})
	if err != nil || path != "/opt/cni/bin/fakecni" {
		t.Fatalf("FindInPath = %q, %v; want the node path /opt/cni/bin/fakecni", path, err)
	}
	if _, err := e.FindInPath("nothere", []string{"/opt/cni/bin"}); err == nil {
		t.Error("FindInPath found a plugin the node does not have")
	}
	if _, err := e.FindInPath("../bin/fakecni", []string{"/opt/cni/bin"}); err == nil {
		t.Error("FindInPath took a path for a plugin name")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nsPath := filepath.Join(netnsDir, "pod")
	if err := os.WriteFile(nsPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.ExecPlugin(ctx, path, []byte(`{"name":"membrane"}`), []string{"CNI_COMMAND=ADD", "CNI_NETNS=" + nsPath})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if !strings.Contains(string(out), "10.244.1.7/32") {
		t.Errorf("ADD printed %q", out)
	}
	seen, err := os.ReadFile(filepath.Join(lib, "seen"))
	if err != nil {
		t.Fatalf("the plugin's write to the node's /var/lib/membrane: %v", err)
	}
	lines := strings.SplitN(string(seen), "\n", 3)
	if len(lines) != 3 || lines[0] != `{"name":"membrane"}` || lines[1] != "/run/netns/pod" || !strings.Contains(lines[2], "CNI_COMMAND=ADD") {
		t.Errorf("the plugin saw %q", seen)
	}
	if entries, _ := os.ReadDir(filepath.Join(cfg.StateDir, "cni", "exec")); len(entries) != 1 {
		t.Errorf("per-call state left behind: %v", entries)
	}

	_, err = e.ExecPlugin(ctx, path, nil, []string{"CNI_COMMAND=DEL"})
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != 7 || cniErr.Msg != "refused DEL" {
		t.Errorf("a failing plugin's error = %v, want its CNI error", err)
	}
	if _, err := e.ExecPlugin(ctx, "/opt/cni/bin/missing", nil, nil); err == nil || !strings.Contains(err.Error(), "127") {
		t.Errorf("a missing plugin = %v, want exit code 127", err)
	}
}

// The node's configuration is the first file of its /etc/cni/net.d, read
// anew for each pod: none there yet means the network is not ready.
func TestNetworkConfig(t *testing.T) {
	conf := t.TempDir()
	n, err := newNetwork(Config{StateDir: t.TempDir(), HostPaths: []HostPathMapping{{Path: "/etc/cni/net.d", Source: conf}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.config(); err == nil || !strings.Contains(err.Error(), "network plugin not ready: no CNI configuration in /etc/cni/net.d") {
		t.Fatalf("empty directory: %v", err)
	}
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("99-loopback.conf", `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`)
	list, err := n.config()
	if err != nil || list.Name != "lo" || len(list.Plugins) != 1 {
		t.Fatalf("a single .conf: %+v, %v", list, err)
	}
	write("05-membrane.conflist", `{"cniVersion":"1.0.0","name":"membrane","plugins":[{"type":"membrane-cni"}]}`)
	write("README", "not a configuration")
	if list, err := n.config(); err != nil || list.Name != "membrane" {
		t.Fatalf("the first file in lexical order: %+v, %v", list, err)
	}
	write("01-broken.conflist", `{"name":`)
	if _, err := n.config(); err == nil || !strings.Contains(err.Error(), "01-broken.conflist") {
		t.Errorf("a broken first file: %v, want an error naming it", err)
	}
}

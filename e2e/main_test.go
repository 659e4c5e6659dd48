// Package e2e holds Membrane's end-to-end tests. They run on local clusters
// made of real parts (see package localcluster) and need root.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// env is what every end-to-end test shares: one 2-node cluster.
type env struct {
	toolsDir string
	binDir   string
	cluster  *localcluster.State
	setupErr error
}

// shared is set up once by TestMain; tests read it through cluster(t).
var shared env

// sharedName is the shared cluster's name. It carries this process's PID, so
// that test runs side by side do not meet, and a cluster whose run died can
// be told apart (see removeAbandoned).
var sharedName = "e2e-" + strconv.Itoa(os.Getpid())

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		if os.Geteuid() != 0 {
			fmt.Println("e2e: not root: the end-to-end tests are skipped, or fail in CI (they create namespaces, cgroups and eBPF programs)")
		}
		os.Exit(m.Run())
	}
	shared = setUp()
	if shared.setupErr != nil {
		// Once here in full (it quotes the failing component's log); every
		// test that needs the cluster fails with it too.
		fmt.Fprintln(os.Stderr, "e2e:", shared.setupErr)
	}
	code := m.Run()
	if shared.cluster != nil {
		if err := localcluster.Down(context.Background(), slog.New(slog.NewTextHandler(os.Stderr, nil)), sharedName); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: tear down:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func setUp() env {
	e := env{toolsDir: os.Getenv("MEMBRANE_CACHE"), binDir: os.Getenv("MEMBRANE_BIN_DIR")}
	if e.toolsDir == "" {
		home, _ := os.UserHomeDir()
		e.toolsDir = filepath.Join(home, ".cache", "membrane")
	}
	if e.binDir == "" {
		abs, _ := filepath.Abs("../bin")
		e.binDir = abs
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	removeAbandoned(log)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := localcluster.Up(ctx, log, localcluster.Options{
		Name: sharedName, Nodes: 2,
		PodCIDR: localcluster.DefaultPodCIDR, ServiceCIDR: localcluster.DefaultServiceCIDR,
		ToolsDir: e.toolsDir, BinDir: e.binDir,
	})
	if err != nil {
		e.setupErr = fmt.Errorf("bring up the shared cluster (run `make tools build` first): %w", err)
		return e
	}
	fmt.Printf("e2e: cluster %q up in %s\n", sharedName, time.Since(start).Round(time.Millisecond))
	e.cluster = s
	return e
}

// cluster returns the shared cluster, skipping in -short mode; without root
// it skips, and fails in CI.
func cluster(t *testing.T) *kube {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	testenv.RequireRoot(t, "end-to-end test (namespaces, cgroups, eBPF)")
	if shared.setupErr != nil {
		t.Fatal(shared.setupErr)
	}
	return &kube{t: t, kubeconfig: shared.cluster.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}
}

// removeAbandoned removes clusters left by test runs that died, and the logs
// of failed starts of such runs: their names end in the PID of a process that
// no longer runs.
func removeAbandoned(log *slog.Logger) {
	entries, err := os.ReadDir(localcluster.DefaultStateRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "e2e-") {
			continue
		}
		pid, err := strconv.Atoi(name[strings.LastIndex(name, "-")+1:])
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = localcluster.Down(context.Background(), log, name)
	}
}

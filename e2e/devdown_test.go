package e2e

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestDevDownLeavesNothing brings up a second cluster beside the shared one,
// runs a pod on it, and checks that `down` removes every process, namespace,
// link, mount, cgroup and file it made, and that a second `down` is fine.
func TestDevDownLeavesNothing(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	name := "e2e-dn-" + strconv.Itoa(os.Getpid())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	_ = localcluster.Down(ctx, log, name)
	s, err := localcluster.Up(ctx, log, localcluster.Options{
		Name: name, Nodes: 1, PodCIDR: "10.245.0.0/16", ServiceCIDR: "10.97.0.0/16",
		ToolsDir: shared.toolsDir, BinDir: shared.binDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			_ = localcluster.Down(context.Background(), log, name)
		}
	})
	l := s.Layout()
	k := &kube{t: t, kubeconfig: l.Kubeconfig(), kubectlPath: shared.toolsDir + "/bin/kubectl"}
	k.must("", "run", "sleeper", "--image=busybox", "--restart=Never", "--", "sleep", "3600")
	k.must("", "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")

	cgroupDir := l.CgroupDir(s.CgroupRoot)
	if err := localcluster.Down(ctx, log, name); err != nil {
		t.Fatal(err)
	}
	downed = true

	for _, p := range s.Processes {
		if p.Alive() {
			t.Errorf("process %s (pid %d) still runs", p.Name, p.PID)
		}
	}
	entries, _ := os.ReadDir(localcluster.NetnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "membrane-"+name+"-") {
			t.Errorf("network namespace %s left", e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{l.Bridge(): true, l.ControlPlaneLink(): true}
	for _, n := range s.Nodes {
		ours[n.Link] = true
	}
	for _, link := range links {
		if ours[link.Attrs().Name] {
			t.Errorf("link %s left", link.Attrs().Name)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, l.RunDir()) || strings.Contains(line, "/membrane-"+name+"-") {
			t.Errorf("mount left: %s", line)
		}
	}
	for _, path := range []string{cgroupDir, l.StateDir(), l.RunDir()} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s left (%v)", path, err)
		}
	}
	if err := localcluster.Down(ctx, log, name); err != nil {
		t.Fatalf("second down: %v", err)
	}
}

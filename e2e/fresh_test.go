package e2e

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// freshMountNS starts a process in a private mount namespace in which
// /sys/fs/bpf is a bare sysfs directory, as on a machine nobody prepared,
// and returns its PID: enter the namespace with `nsenter --target PID
// --mount`. It lives (keeping the namespace) until the test's cleanups end.
func freshMountNS(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 1; done; echo ready; exec sleep 7200`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a private mount namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the private mount namespace could not take away /sys/fs/bpf")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the private mount namespace did not get ready in 10s")
	}
	return cmd.Process.Pid
}

// inMountNS is a command run in the mount namespace of pid.
func inMountNS(ctx context.Context, pid int, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(pid), "--mount", "--"}, argv...)...)
}

// fsTypeIn is the filesystem type of path, as stat(1) names it, in the
// mount namespace of pid.
func fsTypeIn(t *testing.T, pid int, path string) string {
	t.Helper()
	out, err := inMountNS(t.Context(), pid, "stat", "-f", "-c", "%T", path).CombinedOutput()
	if err != nil {
		t.Fatalf("stat -f %s: %v: %s", path, err, out)
	}
	return strings.TrimSpace(string(out))
}

// bpffsMounts is this host's mount table lines for /sys/fs/bpf.
func bpffsMounts(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == "/sys/fs/bpf" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestFreshHost runs `membrane dev up` where no bpffs is mounted: the
// product mounts it, and Services, NetworkPolicy and L7 policy work on the
// cluster it brings up. It runs in a private mount namespace, so the host's
// mounts stay as they are; `dev down` runs in it too.
func TestFreshHost(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	name := "e2e-fr-" + strconv.Itoa(os.Getpid())
	membrane := filepath.Join(shared.binDir, "membrane")
	hostBPF := bpffsMounts(t)
	ns := freshMountNS(t)
	if got := fsTypeIn(t, ns, "/sys/fs/bpf"); got != "sysfs" {
		t.Fatalf("/sys/fs/bpf in the fresh namespace is %s, want a bare sysfs directory", got)
	}

	up := false
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := inMountNS(ctx, ns, membrane, "dev", "down", "--name", name).CombinedOutput()
		if err != nil {
			t.Errorf("dev down in the fresh namespace: %v\n%s", err, out)
		}
		if _, err := os.Stat(localcluster.Layout{Name: name}.StateDir()); up && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dev down left the cluster's state: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := inMountNS(ctx, ns, membrane, "dev", "up", "--name", name, "--nodes", "2",
		"--pod-cidr", "10.250.0.0/16", "--service-cidr", "10.101.0.0/16").CombinedOutput()
	if err != nil {
		t.Fatalf("dev up on a fresh host: %v\n%s", err, out)
	}
	up = true
	t.Logf("dev up on a host without bpffs: up in %s", time.Since(start).Round(time.Second))
	if !strings.Contains(string(out), `msg="mounted bpffs" path=/sys/fs/bpf`) {
		t.Errorf("dev up does not say it mounted bpffs:\n%s", out)
	}
	if got := fsTypeIn(t, ns, "/sys/fs/bpf"); got != "bpf_fs" {
		t.Errorf("/sys/fs/bpf after dev up is %s, want bpf_fs", got)
	}
	if got := bpffsMounts(t); got != hostBPF {
		t.Errorf("the host's /sys/fs/bpf mounts changed:\nbefore: %s\nafter: %s", hostBPF, got)
	}

	s, err := localcluster.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	k := &kube{t: t, kubeconfig: s.Layout().Kubeconfig(), kubectlPath: filepath.Join(shared.toolsDir, "bin", "kubectl")}

	t.Run("Service and NetworkPolicy", func(t *testing.T) {
		checkServiceAndPolicy(t, &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}, "fresh")
	})

	t.Run("L7 policy through Envoy", func(t *testing.T) {
		checkL7(t, &kube{t: t, kubeconfig: k.kubeconfig, kubectlPath: k.kubectlPath}, s.Nodes)
	})
}

// TestFreshDevUpFailure: when a component fails, `dev up` removes the
// cluster but its logs, and its error quotes the failing agent's log, which
// it keeps with the others. The agent (a pod of the chart's DaemonSet)
// fails because its node's pin directory holds a map this build cannot use.
func TestFreshDevUpFailure(t *testing.T) {
	cluster(t) // skips like every end-to-end test; the shared cluster mounted bpffs
	name := "e2e-ff-" + strconv.Itoa(os.Getpid())
	l := localcluster.Layout{Name: name}
	node := l.NodeName(1)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t.Cleanup(func() {
		if err := localcluster.Down(context.Background(), log, name); err != nil {
			t.Errorf("down: %v", err)
		}
		_ = os.RemoveAll(l.BPFDir())
	})

	pinDir := l.NodeAgentPinDir(node)
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "membrane_svc4", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Pin(filepath.Join(pinDir, "membrane_svc4"))
	m.Close()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), "dev", "up", "--name", name, "--nodes", "1",
		"--pod-cidr", "10.251.0.0/16", "--service-cidr", "10.102.0.0/16").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("dev up with a broken pin directory: %v, want it to fail\n%s", err, out)
	}
	if _, quoted, ok := strings.Cut(string(out), "\nlast lines of "); ok {
		t.Logf("dev up failed as it should; its error ends:\nlast lines of %s", quoted)
	}
	agentLog := l.PodLog("membrane-agent/" + node)
	for _, want := range []string{
		"membrane-agent/" + node + " exited with code ",
		"; see " + agentLog,
		"last lines of membrane-agent/" + node + " (" + agentLog + "):\n",
		"do not match this build",
		"the logs of every component are kept in " + l.LogDir(),
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dev up's error does not say %q:\n%s", want, out)
		}
	}
	raw, err := os.ReadFile(agentLog)
	if err != nil || !strings.Contains(string(raw), "do not match this build") {
		t.Errorf("the agent's log after the failed start: %v\n%s", err, raw)
	}
	if _, err := localcluster.Load(name); !errors.Is(err, localcluster.ErrNoCluster) {
		t.Errorf("the cluster's record after the failed start: %v, want none", err)
	}
	for _, path := range []string{l.Kubeconfig(), l.PKIDir(), l.RunDir(), l.BPFDir(), l.ControlPlaneNetns(), l.NodeNetns(node)} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after the failed start (%v)", path, err)
		}
	}
	for _, proc := range []string{"kube-apiserver", "etcd"} {
		if pids := processesWith(t, l.StateDir(), proc); len(pids) != 0 {
			t.Errorf("%s of the failed cluster still runs: pids %v", proc, pids)
		}
	}

	out, err = exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), "dev", "down", "--name", name).CombinedOutput()
	if err != nil {
		t.Fatalf("dev down after the failed start: %v\n%s", err, out)
	}
	if _, err := os.Stat(l.StateDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev down left the logs of the failed start: %v", err)
	}
}

// processesWith lists the PIDs whose command line names program and holds
// dir (the cluster's files are below it).
func processesWith(t *testing.T, dir, program string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		if strings.Contains(cmdline, program) && strings.Contains(cmdline, dir+"/") && syscall.Kill(pid, 0) == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

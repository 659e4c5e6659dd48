package agent

import (
	"bytes"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes/fake"
)

// On a fresh machine the agent mounts bpffs for its pin directory, and a
// --cgroup-path that is no cgroup2 stops it with what to mount. Run in a
// private mount namespace on a thread of its own (never unlocked: the
// thread and its namespace end with the test), with /sys/fs/bpf bare.
func TestRunPreparesAFreshHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a mount namespace and mounts bpffs")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare mount namespace: %v", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	isBPF := func() bool {
		var st unix.Statfs_t
		if err := unix.Statfs("/sys/fs/bpf", &st); err != nil {
			t.Fatal(err)
		}
		return st.Type == unix.BPF_FS_MAGIC
	}
	for isBPF() {
		if err := unix.Unmount("/sys/fs/bpf", unix.MNT_DETACH); err != nil {
			t.Fatalf("unmount inherited bpffs: %v", err)
		}
	}
	t.Cleanup(func() { _ = unix.Unmount("/sys/fs/bpf", unix.MNT_DETACH) })

	notCgroup2 := t.TempDir()
	var logs bytes.Buffer
	cfg := Config{NodeName: "node1", BPFPinDir: "/sys/fs/bpf/membrane", CgroupPath: notCgroup2, APIAddr: "127.0.0.1:0"}
	a, err := New(slog.New(slog.NewTextHandler(&logs, nil)), cfg, fake.NewClientset(), nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "--cgroup-path: cgroup v2 directory "+notCgroup2+" is not on a cgroup2 filesystem") ||
		!strings.Contains(err.Error(), "mount -t cgroup2 none "+notCgroup2) {
		t.Errorf("Run with a --cgroup-path on no cgroup2: %v; want what to mount", err)
	}
	if !isBPF() {
		t.Error("Run did not mount bpffs on /sys/fs/bpf")
	}
	if !strings.Contains(logs.String(), `msg="mounted bpffs" path=/sys/fs/bpf pinDir=/sys/fs/bpf/membrane`) {
		t.Errorf("the log does not say bpffs was mounted:\n%s", logs.String())
	}
}

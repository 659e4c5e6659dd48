package hostfs

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// privateMountNS moves the test's goroutine onto a thread of its own with a
// private mount namespace. The thread is never unlocked: it exits with the
// test goroutine, and the namespace with every mount the test made goes
// with it; nothing the test mounts is seen outside.
func privateMountNS(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a mount namespace and mounts filesystems")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare mount namespace: %v", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
}

// mount mounts fstype on dir and unmounts it when the test ends.
func mount(t *testing.T, fstype, dir string) {
	t.Helper()
	if err := unix.Mount(fstype, dir, fstype, 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", fstype, dir, err)
	}
	t.Cleanup(func() {
		// EINVAL: the test unmounted it itself.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

func fsType(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type
}

// A fresh machine: /sys/fs/bpf is an empty sysfs directory. MountBPF for the
// agent's default pin directory mounts bpffs there, once.
func TestMountBPFOnFreshSysFSBPF(t *testing.T) {
	privateMountNS(t)
	const root = "/sys/fs/bpf"
	// Take away whatever bpffs this namespace inherited (stacked mounts too).
	for fsType(t, root) == unix.BPF_FS_MAGIC {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Fatalf("unmount inherited bpffs: %v", err)
		}
	}
	if got := fsType(t, root); got != unix.SYSFS_MAGIC {
		t.Fatalf("%s after unmounting: fs type %#x, want sysfs", root, got)
	}
	t.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	pinDir := filepath.Join(root, "membrane", "demo", "demo-node1")
	mounted, err := MountBPF(log, pinDir)
	if err != nil {
		t.Fatal(err)
	}
	if !mounted {
		t.Fatal("MountBPF reported no mount on a bare sysfs directory")
	}
	if got := fsType(t, root); got != unix.BPF_FS_MAGIC {
		t.Fatalf("%s: fs type %#x after MountBPF, want bpffs", root, got)
	}
	if !strings.Contains(logs.String(), `msg="mounted bpffs" path=/sys/fs/bpf`) {
		t.Errorf("log does not say what was mounted:\n%s", logs.String())
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		t.Fatalf("create the pin dir on the new bpffs: %v", err)
	}

	// Once there, nothing more is mounted, whatever part of the path exists.
	mounted, err = MountBPF(log, pinDir)
	if err != nil || mounted {
		t.Fatalf("second MountBPF = %v, %v; want no mount", mounted, err)
	}
	if n := strings.Count(logs.String(), "mounted bpffs"); n != 1 {
		t.Errorf("%d mounts logged, want 1", n)
	}
}

// A directory that holds something is never hidden under a mount.
func TestMountBPFRefusesNonEmptyDir(t *testing.T) {
	privateMountNS(t)
	dir := t.TempDir()
	mount(t, "tmpfs", dir)
	if err := os.WriteFile(filepath.Join(dir, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := MountBPF(slog.New(slog.DiscardHandler), filepath.Join(dir, "membrane"))
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "mount -t bpf bpf /sys/fs/bpf") {
		t.Fatalf("MountBPF over a non-empty dir: %v; want a refusal that says what to mount", err)
	}
	if got := fsType(t, dir); got != unix.TMPFS_MAGIC {
		t.Fatalf("%s: fs type %#x, want it left tmpfs", dir, got)
	}
}

func TestCheckCgroup2(t *testing.T) {
	privateMountNS(t)
	dir := t.TempDir()
	mount(t, "tmpfs", dir)
	cg2 := filepath.Join(dir, "cg2")
	notCg := filepath.Join(dir, "plain")
	for _, d := range []string{cg2, notCg} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount(t, "cgroup2", cg2)

	if err := CheckCgroup2(cg2); err != nil {
		t.Fatalf("cgroup2 mount: %v", err)
	}
	mounts, err := Cgroup2Mounts()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(mounts, cg2) {
		t.Fatalf("Cgroup2Mounts() = %v, want it to hold %s", mounts, cg2)
	}

	for _, c := range []struct{ path, problem, mount string }{
		{notCg, " is not on a cgroup2 filesystem (it is tmpfs)", "(mount -t cgroup2 none " + notCg + ")"},
		// Mounting on a directory that holds something would hide it.
		{dir, " is not on a cgroup2 filesystem (it is tmpfs)", "(mkdir -p " + dir + "/unified && mount -t cgroup2 none " + dir + "/unified, and use that)"},
		{filepath.Join(dir, "missing"), " does not exist", "(mkdir -p " + dir + "/missing && mount -t cgroup2 none " + dir + "/missing)"},
	} {
		err := CheckCgroup2(c.path)
		for _, want := range []string{"cgroup v2 directory " + c.path + c.problem, "mount cgroup2 " + c.mount, "or use a directory on the cgroup2 mounted on ", cg2} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("CheckCgroup2(%s) = %v; want it to say %q", c.path, err, want)
			}
		}
	}

	// With no cgroup2 left in the namespace the error says so.
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Fatalf("unmount %s: %v", m, err)
		}
	}
	if left, err := Cgroup2Mounts(); err != nil || len(left) != 0 {
		t.Fatalf("cgroup2 mounts after unmounting all: %v, %v", left, err)
	}
	err = CheckCgroup2(notCg)
	if err == nil || !strings.Contains(err.Error(), "no cgroup2 is mounted on this host") {
		t.Errorf("CheckCgroup2 without any cgroup2: %v", err)
	}
}

func TestParseMounts(t *testing.T) {
	const table = `25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu
90 25 0:40 / /srv/my\040cgroups rw - cgroup2 none rw
`
	got, err := parseMounts(strings.NewReader(table), "cgroup2")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/sys/fs/cgroup/unified", "/srv/my cgroups"}
	if !slices.Equal(got, want) {
		t.Fatalf("parseMounts = %q, want %q", got, want)
	}
}

func TestBPFRoot(t *testing.T) {
	dir := t.TempDir()
	for pin, want := range map[string]string{
		dir:                               dir,
		filepath.Join(dir, "a", "b", "c"): dir,
	} {
		got, err := BPFRoot(pin)
		if err != nil || got != want {
			t.Errorf("BPFRoot(%s) = %q, %v; want %q", pin, got, err, want)
		}
	}
	if _, err := BPFRoot("relative/dir"); err == nil {
		t.Error("BPFRoot of a relative path: no error")
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := BPFRoot(filepath.Join(file, "pins")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("BPFRoot below a file: %v", err)
	}
}

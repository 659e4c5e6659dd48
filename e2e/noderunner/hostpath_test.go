package noderunner

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestHostPathResolve(t *testing.T) {
	node := t.TempDir()
	bpf, cg, cgPods := filepath.Join(node, "bpf"), filepath.Join(node, "cgroup"), filepath.Join(node, "cgroup-pods")
	h := newHostPaths([]HostPathMapping{
		{Path: "/sys/fs/bpf", Source: bpf},
		{Path: "/sys/fs/cgroup", Source: cg},
		{Path: "/sys/fs/cgroup/pods", Source: cgPods}, // longer: wins below it
		{Path: "/var/run/membrane", Source: filepath.Join(node, "run")},
	})
	for _, tc := range []struct {
		path, want string
		readOnly   bool
	}{
		{"/sys/fs/bpf", bpf, false},
		{"/sys/fs/bpf/", bpf, false},
		{"/sys/fs/bpf/membrane/tc", filepath.Join(bpf, "membrane/tc"), false},
		{"/sys/fs/cgroup", cg, false},
		{"/sys/fs/cgroup/system", filepath.Join(cg, "system"), false},
		{"/sys/fs/cgroup/pods/x", filepath.Join(cgPods, "x"), false},
		{"/sys/fs/cgroup/podsX", filepath.Join(cg, "podsX"), false}, // a prefix of a name is no match
		{"/var/run/membrane/../membrane/envoy.sock", filepath.Join(node, "run", "envoy.sock"), false},
		{"/proc", "/proc", true},
		{"/lib/modules", "/lib/modules", true},
		{"/sys/kernel/btf/vmlinux", "/sys/kernel/btf/vmlinux", true},
	} {
		got, ro, err := h.resolve(tc.path)
		if err != nil || got != tc.want || ro != tc.readOnly {
			t.Errorf("resolve(%q) = %q, readOnly %v, %v; want %q, %v", tc.path, got, ro, err, tc.want, tc.readOnly)
		}
	}
	for _, p := range []string{"/etc", "/", "/sys", "/sys/fs", "/sys/fs/bpffoo", "/var/run", "/var/lib/membrane", "/var/run/membrane/../../../etc", "relative/path", "/procfoo"} {
		got, _, err := h.resolve(p)
		if err == nil {
			t.Errorf("resolve(%q) = %q, want an error", p, got)
			continue
		}
		if !strings.Contains(err.Error(), "not available on this node") && !strings.Contains(err.Error(), "not an absolute path") {
			t.Errorf("resolve(%q): unclear error %v", p, err)
		}
	}
}

func TestHostPathSymlinkEscape(t *testing.T) {
	node := t.TempDir()
	run := filepath.Join(node, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(run, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(run, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub", filepath.Join(run, "in")); err != nil {
		t.Fatal(err)
	}
	h := newHostPaths([]HostPathMapping{{Path: "/var/run/membrane", Source: run}})
	if got, _, err := h.resolve("/var/run/membrane/out/passwd"); err == nil {
		t.Fatalf("a link out of the node's directory resolved to %q", got)
	}
	if _, _, err := h.resolve("/var/run/membrane/in/x"); err != nil {
		t.Fatalf("a link inside the node's directory: %v", err)
	}
}

func TestValidateHostPaths(t *testing.T) {
	for _, bad := range [][]HostPathMapping{
		{{Path: "sys/fs/bpf", Source: "/x"}},
		{{Path: "/sys/fs/bpf/", Source: "/x"}},
		{{Path: "/sys/fs/bpf", Source: "x"}},
		{{Path: "/a", Source: "/x"}, {Path: "/a", Source: "/y"}},
	} {
		if err := validateHostPaths(bad); err == nil || !strings.Contains(err.Error(), "hostPaths[") {
			t.Errorf("validateHostPaths(%v) = %v, want an error naming the entry", bad, err)
		}
	}
	if err := validateHostPaths([]HostPathMapping{{Path: "/sys/fs/bpf", Source: "/x"}, {Path: "/", Source: "/y"}}); err != nil {
		t.Fatal(err)
	}
}

func TestHostPathType(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	missing := filepath.Join(dir, "missing")
	typ := func(t corev1.HostPathType) *corev1.HostPathType { return &t }
	for _, tc := range []struct {
		path string
		t    *corev1.HostPathType
		ok   bool
	}{
		{missing, nil, true},
		{missing, typ(corev1.HostPathUnset), true},
		{dir, typ(corev1.HostPathDirectory), true},
		{file, typ(corev1.HostPathDirectory), false},
		{missing, typ(corev1.HostPathDirectory), false},
		{file, typ(corev1.HostPathFile), true},
		{dir, typ(corev1.HostPathFile), false},
		{sock, typ(corev1.HostPathSocket), true},
		{file, typ(corev1.HostPathSocket), false},
		{"/dev/null", typ(corev1.HostPathCharDev), true},
		{file, typ(corev1.HostPathCharDev), false},
		{"/dev/null", typ(corev1.HostPathBlockDev), false},
		{file, typ(corev1.HostPathDirectoryOrCreate), false},
		{file, typ(corev1.HostPathFileOrCreate), true},
		{dir, typ(corev1.HostPathFileOrCreate), false},
		{filepath.Join(dir, "no-parent", "f"), typ(corev1.HostPathFileOrCreate), false},
		{dir, typ("Elsewhere"), false},
	} {
		err := checkHostPathType(tc.path, tc.t)
		if (err == nil) != tc.ok {
			t.Errorf("checkHostPathType(%s, %v) = %v, want ok=%v", tc.path, ptr.Deref(tc.t, "<nil>"), err, tc.ok)
		}
	}
	created := filepath.Join(dir, "a", "b")
	if err := checkHostPathType(created, typ(corev1.HostPathDirectoryOrCreate)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(created); err != nil || !fi.IsDir() {
		t.Fatalf("DirectoryOrCreate did not create %s: %v", created, err)
	}
	newFile := filepath.Join(dir, "new")
	if err := checkHostPathType(newFile, typ(corev1.HostPathFileOrCreate)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(newFile); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("FileOrCreate: %v, %v", fi, err)
	}
}

// A pod asking for a path outside the node's host paths gets an error that
// names the volume; nothing is mounted from the machine itself.
func TestPrepareRefusesUnmappedHostPath(t *testing.T) {
	node := t.TempDir()
	v := volumes{refs: fakeRefs{}, hostPaths: newHostPaths([]HostPathMapping{{Path: "/sys/fs/bpf", Source: filepath.Join(node, "bpf")}})}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "bpf", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/bpf", Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
		{Name: "modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules"}}},
		{Name: "untyped", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/bpf/untyped"}}},
	}}}
	got, err := v.prepare(context.Background(), pod, t.TempDir(), "10.0.0.1", "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if got.dirs["bpf"] != filepath.Join(node, "bpf") || got.readOnly["bpf"] || got.dirs["modules"] != "/lib/modules" || !got.readOnly["modules"] {
		t.Fatalf("prepared %+v", got)
	}
	if fi, err := os.Stat(filepath.Join(node, "bpf")); err != nil || !fi.IsDir() {
		t.Fatalf("DirectoryOrCreate: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(node, "bpf", "untyped")); err != nil || !fi.IsDir() {
		t.Fatalf("a missing path without type is not created as a directory: %v", err)
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "etc", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}})
	_, err = v.prepare(context.Background(), pod, t.TempDir(), "10.0.0.1", "10.0.0.1")
	if err == nil || !strings.Contains(err.Error(), `volume "etc": hostPath "/etc" is not available on this node`) {
		t.Fatalf("unmapped hostPath: %v", err)
	}
}

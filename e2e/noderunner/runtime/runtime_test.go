//go:build linux

package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/cgroups"
	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// TestMain lets the test binary act as the container init when Start
// re-executes it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitArg {
		err := Init(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(ExitStatus(err))
	}
	if spec := os.Getenv(holderEnv); spec != "" {
		runHolder(spec)
	}
	os.Exit(m.Run())
}

// fixture is a rootfs with the probe program, a test cgroup and a runtime.
type fixture struct {
	rt     *Runtime
	rootfs string
	cgroot string // the cgroup v2 mount
	cgroup string // a test cgroup v2 dir; containers get children of it
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.RequireRoot(t, "mount, clone of namespaces, cgroups")
	fsys, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(fsys, []byte("\toverlay\n")) {
		testenv.Missing(t, "needs overlayfs: the kernel lists no overlay in /proc/filesystems")
	}
	cgroot, err := cgroups.Root()
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("needs cgroup v2: %v", err))
	}
	own, err := ownCgroup()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(cgroot, own, fmt.Sprintf("membrane-runtime-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgroups.Remove(cg); err != nil {
			t.Errorf("clean up test cgroup: %v", err)
		}
	})

	rootfs := filepath.Join(t.TempDir(), "rootfs")
	for _, dir := range []string{"bin", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "bin", "probe"), "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &fixture{rt: New(logger, ""), rootfs: rootfs, cgroot: cgroot, cgroup: cg}
}

// ownCgroup is this process's cgroup v2 path.
func ownCgroup() (string, error) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// spec returns a spec for a container named name running the probe, with its
// own state dir, log and cgroup, removed when the test ends.
func (f *fixture) spec(t *testing.T, name string, args ...string) Spec {
	t.Helper()
	dir := t.TempDir()
	cg := filepath.Join(f.cgroup, name)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgroups.Remove(cg); err != nil {
			t.Errorf("clean up cgroup: %v", err)
		}
	})
	return Spec{
		ID:       name,
		Hostname: "pod-" + name,
		RootFS:   f.rootfs,
		StateDir: filepath.Join(dir, "state"),
		Cgroup:   cg,
		Argv:     append([]string{"probe"}, args...),
		Env:      []string{"PATH=/bin", "FOO=bar"},
		LogPath:  filepath.Join(dir, "logs", "0.log"),
	}
}

// start starts s and removes the container when the test ends.
func (f *fixture) start(t *testing.T, s Spec) *Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := f.rt.Start(ctx, s)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return c
}

func waitDone(t *testing.T, c *Container) int {
	t.Helper()
	select {
	case <-c.Done():
		return c.ExitCode()
	case <-time.After(20 * time.Second):
		t.Fatal("container did not exit")
		return -1
	}
}

type record struct{ stream, tag, content string }

// readLog parses a CRI log file, failing on any malformed line.
func readLog(t *testing.T, path string) []record {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	criLine := regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z) (stdout|stderr) ([FP]) (.*)$`)
	var recs []record
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("log line not in CRI format: %q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Fatalf("log line timestamp: %v", err)
		}
		recs = append(recs, record{stream: m[3], tag: m[4], content: m[5]})
	}
	return recs
}

// keyValues collects the key=value stdout lines of recs.
func keyValues(recs []record) map[string]string {
	kv := map[string]string{}
	for _, r := range recs {
		if k, v, ok := strings.Cut(r.content, "="); ok && r.stream == "stdout" {
			kv[k] = v
		}
	}
	return kv
}

func nsInode(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// hostNetNS is the test's own network namespace. It reads the current
// thread's: netns.Create may leave the process's main thread in a new one.
func hostNetNS(t *testing.T) string {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	return nsInode(t, "/proc/thread-self/ns/net")
}

func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		raw, _ := os.ReadFile(path)
		if strings.Contains(string(raw), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("log %s never had %q", path, want)
}

func TestContainer(t *testing.T) {
	f := newFixture(t)

	t.Run("namespaces, mounts, overlay and log", func(t *testing.T) {
		t.Parallel()
		secret := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(secret, []byte("s3cret\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := f.spec(t, "info", "info", "/var/run/secrets/token", "7")
		s.WorkingDir = "/work/dir"
		s.Mounts = []Mount{{Source: secret, Target: "/var/run/secrets/token", ReadOnly: true}}
		c := f.start(t, s)
		if code := waitDone(t, c); code != 7 {
			t.Errorf("exit code = %d, want 7", code)
		}
		kv := keyValues(readLog(t, s.LogPath))
		want := map[string]string{
			"pid":      "1",
			"hostname": "pod-info",
			"cwd":      "/work/dir",
			"foo":      "bar",
			"file":     "s3cret",
			"netns":    hostNetNS(t),
			"rowrite":  "denied",
			"written":  "ok",
			"devnull":  "true",
		}
		for k, v := range want {
			if kv[k] != v {
				t.Errorf("%s = %q, want %q", k, kv[k], v)
			}
		}
		if want := "0::" + strings.TrimPrefix(s.Cgroup, f.cgroot); kv["cgroup"] != want {
			t.Errorf("cgroup = %q, want the container's cgroup %s", kv["cgroup"], s.Cgroup)
		}
		if _, err := os.Stat(filepath.Join(f.rootfs, "probe-wrote")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("container wrote into the rootfs: %v", err)
		}
		if _, err := os.Stat(filepath.Join(f.rootfs, "work")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("working dir created in the rootfs: %v", err)
		}
		if _, err := os.Stat(filepath.Join(s.StateDir, "upper", "probe-wrote")); err != nil {
			t.Errorf("write not in the overlay upper dir: %v", err)
		}
		if raw, _ := os.ReadFile(secret); string(raw) != "s3cret\n" {
			t.Errorf("read-only mount source changed: %q", raw)
		}
		if err := c.Remove(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(s.StateDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state dir left after Remove: %v", err)
		}
		if err := c.Remove(); err != nil {
			t.Errorf("second Remove: %v", err)
		}
	})

	t.Run("run in the foreground", func(t *testing.T) {
		t.Parallel()
		secret := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(secret, []byte("node file\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := f.spec(t, "run", "info", "/etc/cni/net.d/conf", "7")
		s.Cgroup, s.LogPath = "", ""
		s.Mounts = []Mount{{Source: secret, Target: "/etc/cni/net.d/conf", ReadOnly: true}}
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		code, err := f.rt.Run(ctx, s, nil, &stdout, &stderr)
		if err != nil || code != 7 {
			t.Fatalf("Run = %d, %v (stderr %q), want exit code 7", code, err, stderr.String())
		}
		kv := map[string]string{}
		for _, line := range strings.Split(stdout.String(), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				kv[k] = v
			}
		}
		// The caller's network namespace, its own mount namespace with
		// the mounts, the overlay root.
		want := map[string]string{"file": "node file", "netns": hostNetNS(t), "rowrite": "denied", "written": "ok", "devnull": "true"}
		for k, v := range want {
			if kv[k] != v {
				t.Errorf("%s = %q, want %q (stdout %q)", k, kv[k], v, stdout.String())
			}
		}
		if kv["pid"] == "1" {
			t.Error("Run gave the program a PID namespace of its own")
		}
		if _, err := os.Stat(s.StateDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state dir left after Run: %v", err)
		}

		s.NetNS = "/proc/self/ns/net"
		if _, err := f.rt.Run(ctx, s, nil, &stdout, &stderr); err == nil {
			t.Error("Run took a network namespace: want the caller's")
		}
	})

	t.Run("network namespace", func(t *testing.T) {
		t.Parallel()
		ns := filepath.Join(t.TempDir(), "netns")
		if err := netns.Create(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netns.Remove(ns) })
		s := f.spec(t, "netns", "info", "/etc/hostname", "0")
		s.NetNS = ns
		c := f.start(t, s)
		if code := waitDone(t, c); code != 0 {
			t.Errorf("exit code = %d", code)
		}
		kv := keyValues(readLog(t, s.LogPath))
		if want := nsInode(t, ns); kv["netns"] != want {
			t.Errorf("container netns = %q, want %q", kv["netns"], want)
		}
	})

	t.Run("host PID namespace", func(t *testing.T) {
		t.Parallel()
		s := f.spec(t, "hostpid", "info", "/etc/hostname", "0")
		s.HostPID = true
		c := f.start(t, s)
		if code := waitDone(t, c); code != 0 {
			t.Errorf("exit code = %d", code)
		}
		// In the machine's PID namespace the container's process has the
		// PID the runtime sees.
		if kv := keyValues(readLog(t, s.LogPath)); kv["pid"] != strconv.Itoa(c.Pid()) {
			t.Errorf("pid in the container = %q, want the host's %d", kv["pid"], c.Pid())
		}
	})

	t.Run("cgroup and exec", func(t *testing.T) {
		t.Parallel()
		s := f.spec(t, "exec", "sleep")
		s.WorkingDir = "/tmp"
		c := f.start(t, s)
		waitLog(t, s.LogPath, "ready")

		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), "/"+filepath.Base(f.cgroup)+"/exec\n") {
			t.Errorf("/proc/%d/cgroup = %q, want the container's cgroup", c.Pid(), raw)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		code, err := c.Exec(ctx, []string{"probe", "info", "/etc/hostname", "4"}, nil, &stdout, &stderr, false)
		if err != nil || code != 4 {
			t.Fatalf("exec = %d, %v; stderr %q", code, err, stderr.String())
		}
		var recs []record
		for _, l := range strings.Split(stdout.String(), "\n") {
			recs = append(recs, record{stream: "stdout", content: l})
		}
		kv := keyValues(recs)
		if kv["hostname"] != "pod-exec" || kv["cwd"] != "/tmp" || kv["foo"] != "bar" ||
			kv["netns"] != hostNetNS(t) || kv["pid"] == "1" || kv["written"] != "ok" {
			t.Errorf("exec saw %v", kv)
		}
		if !strings.HasSuffix(kv["cgroup"], "/exec") {
			t.Errorf("exec cgroup = %q", kv["cgroup"])
		}
		if _, err := os.Stat(filepath.Join(s.StateDir, "upper", "probe-wrote")); err != nil {
			t.Errorf("exec's write not in the container's overlay: %v", err)
		}

		stdout.Reset()
		code, err = c.Exec(ctx, []string{"probe", "cat"}, strings.NewReader("hello"), &stdout, nil, false)
		if err != nil || code != 0 || stdout.String() != "hello" {
			t.Errorf("exec cat = %d, %v, %q", code, err, stdout.String())
		}

		stderr.Reset()
		code, err = c.Exec(ctx, []string{"no-such-command"}, nil, nil, &stderr, false)
		if err != nil || code != 127 {
			t.Errorf("exec of a missing command = %d, %v, want 127", code, err)
		}
		if !strings.Contains(stderr.String(), "no-such-command") {
			t.Errorf("exec of a missing command: stderr %q", stderr.String())
		}

		stdout.Reset()
		code, err = c.Exec(ctx, []string{"probe", "tty"}, nil, &stdout, nil, true)
		if err != nil || code != 0 || !strings.Contains(stdout.String(), "tty=true") ||
			!strings.Contains(stdout.String(), "size=80x24") {
			t.Errorf("exec with tty = %d, %v, %q", code, err, stdout.String())
		}

		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		start := time.Now()
		if _, err := c.Exec(short, []string{"probe", "ignore-term"}, nil, nil, nil, false); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("exec past its context = %v, want deadline exceeded", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("cancelled exec took %s", time.Since(start))
		}

		if err := c.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if c.ExitCode() != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0", c.ExitCode())
		}
		if _, err := c.Exec(ctx, []string{"probe", "exit", "0"}, nil, nil, nil, false); !errors.Is(err, ErrNotRunning) {
			t.Errorf("exec in an exited container = %v, want ErrNotRunning", err)
		}
		recs = readLog(t, s.LogPath)
		if last := recs[len(recs)-1]; last.content != "term" {
			t.Errorf("last log record = %+v, want term", last)
		}
	})

	t.Run("stop kills after grace", func(t *testing.T) {
		t.Parallel()
		s := f.spec(t, "stubborn", "ignore-term")
		c := f.start(t, s)
		waitLog(t, s.LogPath, "ready")
		start := time.Now()
		if err := c.Stop(500 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 500*time.Millisecond || d > 10*time.Second {
			t.Errorf("Stop took %s", d)
		}
		if code := c.ExitCode(); code != 128+int(syscall.SIGKILL) {
			t.Errorf("exit code = %d, want 137", code)
		}
		if err := c.Stop(time.Second); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})

	t.Run("log format", func(t *testing.T) {
		t.Parallel()
		s := f.spec(t, "big", "big")
		c := f.start(t, s)
		waitDone(t, c)
		recs := readLog(t, s.LogPath)
		var line strings.Builder
		var tags []string
		for _, r := range recs {
			tags = append(tags, r.tag)
			if r.tag == "P" && len(r.content) != maxLogLine {
				t.Errorf("partial record of %d bytes", len(r.content))
			}
			line.WriteString(r.content)
			if r.tag == "F" {
				line.WriteString("\n")
			}
		}
		if want := strings.Repeat("x", 40000) + "\ntail\n"; line.String() != want {
			t.Errorf("log content of %d bytes differs from the output", line.Len())
		}
		if strings.Join(tags, "") != "PPFF" {
			t.Errorf("tags = %v, want P P F F", tags)
		}

		s = f.spec(t, "stderr", "stderr")
		c = f.start(t, s)
		if code := waitDone(t, c); code != 3 {
			t.Errorf("exit code = %d, want 3", code)
		}
		if recs := readLog(t, s.LogPath); len(recs) != 1 || recs[0] != (record{"stderr", "F", "boom"}) {
			t.Errorf("log = %+v", recs)
		}
	})

	t.Run("start errors", func(t *testing.T) {
		t.Parallel()
		for i, tc := range []struct {
			argv []string
			code int
			msg  string
		}{
			{[]string{"/nope"}, 127, `exec "/nope": no such file or directory`},
			{[]string{"nope"}, 127, `exec "nope": executable file not found in $PATH`},
			{[]string{"/bin/notexec"}, 126, `exec "/bin/notexec": permission denied`},
			{[]string{"/bin"}, 126, `exec "/bin": is a directory`},
		} {
			s := f.spec(t, fmt.Sprintf("fail-%d", i))
			s.Argv = tc.argv
			_, err := f.rt.Start(context.Background(), s)
			var ie *InitError
			if !errors.As(err, &ie) || ie.Code != tc.code || ie.Message != tc.msg {
				t.Errorf("Start(%q) = %v, want InitError %d %q", tc.argv, err, tc.code, tc.msg)
				continue
			}
			if recs := readLog(t, s.LogPath); len(recs) != 1 || recs[0].content != tc.msg || recs[0].stream != "stderr" {
				t.Errorf("log of failed start = %+v", recs)
			}
			if _, err := os.Stat(s.StateDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state dir left after a failed start: %v", err)
			}
		}
	})

	t.Run("kill cgroup", func(t *testing.T) {
		t.Parallel()
		s := f.spec(t, "killed", "ignore-term")
		c := f.start(t, s)
		waitLog(t, s.LogPath, "ready")
		if err := cgroups.Remove(s.Cgroup); err != nil {
			t.Fatal(err)
		}
		if code := waitDone(t, c); code != 137 {
			t.Errorf("exit code = %d, want 137", code)
		}
		if _, err := os.Stat(s.Cgroup); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup left: %v", err)
		}
		if err := cgroups.Remove(s.Cgroup); err != nil {
			t.Errorf("Remove of a removed cgroup: %v", err)
		}
	})
}

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	for _, dir := range []string{"etc", "run/real"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, dest := range map[string]string{
		"etc/resolv.conf": "../run/real/resolv.conf",
		"etc/abs":         "/run/real",
		"etc/escape":      "../../../../outside",
		"loop":            "loop",
	} {
		if err := os.Symlink(dest, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for in, want := range map[string]string{
		"/etc/resolv.conf": "/run/real/resolv.conf",
		"/etc/abs/x":       "/run/real/x",
		"/etc/escape":      "/outside",
		"/missing/../etc":  "/etc",
		"/a/b":             "/a/b",
	} {
		got, err := resolveInRoot(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolveInRoot(%q) = %q, %v; want %q", in, got, err, filepath.Join(root, want))
		}
	}
	if _, err := resolveInRoot(root, "/loop/x"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("resolveInRoot of a loop = %v, want ELOOP", err)
	}
}

//go:build linux

package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syncFD is the descriptor (ExtraFiles[0]) on which Init reports to Start:
// "ready\n" once the container is set up, then, only if exec fails, a JSON
// InitError. The descriptor is close-on-exec, so EOF right after "ready"
// means the container's program runs.
const syncFD = 3

const syncReady = "ready\n"

// InitError is a failure to set up or start a container's program. Code is
// the exit status the init process should end with: 127 when the program
// is not found, 126 when it cannot be executed, as shells and runc do.
type InitError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *InitError) Error() string { return e.Message }

// ExitStatus is the status the host binary exits with after Init returned
// err: the InitError's code, 127 for other errors.
func ExitStatus(err error) int {
	var ie *InitError
	if errors.As(err, &ie) {
		return ie.Code
	}
	return 127
}

// Init is the container init, run in the re-executed host binary with the
// arguments that follow InitArg. It is pid 1 of the container's new PID
// namespace (unless HostPID) and alone in a new mount namespace: it joins the pod's network
// namespace, mounts the overlay root, the bind mounts, /proc, /sys and /dev,
// pivots into the root and executes the container's program.
//
// Init returns only on failure. The host binary must then print the error to
// stderr (which is the container's log) and exit with ExitStatus(err):
//
//	if len(os.Args) > 1 && os.Args[1] == runtime.InitArg {
//		err := runtime.Init(os.Args[2:])
//		fmt.Fprintln(os.Stderr, err)
//		os.Exit(runtime.ExitStatus(err))
//	}
func Init(args []string) error {
	// Never unlocked: this thread joins the pod's network namespace and
	// calls execve, so the program inherits its namespaces.
	goruntime.LockOSThread()

	var sync *os.File
	if _, err := unix.FcntlInt(syncFD, unix.F_GETFD, 0); err == nil {
		sync = os.NewFile(syncFD, "init-sync")
	}
	err := initAndExec(args, sync)
	var ie *InitError
	if !errors.As(err, &ie) {
		ie = &InitError{Code: 127, Message: "container init: " + err.Error()}
	}
	if sync != nil {
		raw, _ := json.Marshal(ie)
		_, _ = sync.Write(raw)
	}
	return ie
}

// initAndExec returns only on failure.
func initAndExec(args []string, sync *os.File) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: %s <spec.json>", InitArg)
	}
	s, err := readSpec(args[0])
	if err != nil {
		return err
	}
	if err := setupContainer(s); err != nil {
		return err
	}
	env := s.env()
	path, err := lookPath(s.Argv[0], env)
	if err != nil {
		return err
	}
	if sync != nil {
		if _, err := sync.WriteString(syncReady); err != nil {
			return fmt.Errorf("report ready: %w", err)
		}
		unix.CloseOnExec(syncFD)
	}
	err = unix.Exec(path, s.Argv, env)
	return execError(s.Argv[0], err)
}

// setupContainer builds the container's filesystem view and pivots into it.
func setupContainer(s Spec) error {
	// Nothing mounted here may propagate back to the host; mounts made on
	// the host still reach a HostToContainer mount (see bindMount).
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	if s.NetNS != "" {
		if err := joinNetNS(s.NetNS); err != nil {
			return err
		}
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", s.Hostname, err)
		}
	}
	root := s.mergedDir()
	if err := mountOverlay(s); err != nil {
		return err
	}
	if err := mountSystem(root, s.Security.Privileged); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		if err := bindMount(root, m); err != nil {
			return err
		}
	}
	if err := pivotRoot(root); err != nil {
		return err
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return fmt.Errorf("create working directory: %w", err)
	}
	if err := unix.Chdir(wd); err != nil {
		return fmt.Errorf("change to working directory %q: %w", wd, err)
	}
	return limitCapabilities(s.Security)
}

// limitCapabilities leaves the calling (locked) thread, and so the program
// it executes as root, exactly the capabilities of sec: it drops the rest
// from the bounding set and sets the permitted, effective and inheritable
// sets. A privileged container, or one that does not limit them, keeps all.
func limitCapabilities(sec Security) error {
	if sec.Privileged || !sec.LimitCapabilities {
		return nil
	}
	mask, err := capabilityMask(sec.Capabilities)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return fmt.Errorf("limit capabilities: %w", err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || last < 0 || last > 63 {
		return fmt.Errorf("limit capabilities: bad cap_last_cap %q", raw)
	}
	mask &= 1<<(last+1) - 1
	for c := 0; c <= last; c++ {
		if mask&(1<<c) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	lo, hi := uint32(mask), uint32(mask>>32)
	data := [2]unix.CapUserData{
		{Effective: lo, Permitted: lo, Inheritable: lo},
		{Effective: hi, Permitted: hi, Inheritable: hi},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities: %w", err)
	}
	return nil
}

// joinNetNS moves the calling (locked) thread into the namespace at path.
func joinNetNS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join network namespace %s: %w", path, err)
	}
	return nil
}

func mountOverlay(s Spec) error {
	// Backslash escapes the option separator ',' and the layer separator ':'.
	esc := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`)
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		esc.Replace(s.RootFS), esc.Replace(s.upperDir()), esc.Replace(s.workDir()))
	if err := unix.Mount("overlay", s.mergedDir(), "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay (%s) at %s: %w", opts, s.mergedDir(), err)
	}
	return nil
}

// mountSystem mounts /proc, a read-only /sys and a minimal /dev under root;
// a privileged container gets a writable /sys and the node's /dev.
func mountSystem(root string, privileged bool) error {
	type mnt struct {
		target, fstype, data string
		flags                uintptr
	}
	const (
		nosuid = unix.MS_NOSUID
		nodev  = unix.MS_NODEV
		noexec = unix.MS_NOEXEC
	)
	mounts := []mnt{
		{"/proc", "proc", "", nosuid | nodev | noexec},
		{"/sys", "sysfs", "", nosuid | nodev | noexec | unix.MS_RDONLY},
		{"/dev", "tmpfs", "mode=755,size=65536k", nosuid | unix.MS_STRICTATIME},
		{"/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620", nosuid | noexec},
		{"/dev/shm", "tmpfs", "mode=1777,size=65536k", nosuid | nodev | noexec},
	}
	if privileged {
		mounts = []mnt{
			{"/proc", "proc", "", nosuid | nodev | noexec},
			{"/sys", "sysfs", "", nosuid | nodev | noexec},
		}
	}
	for _, m := range mounts {
		target, err := mkdirInRoot(root, m.target)
		if err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s at %s: %w", m.fstype, m.target, err)
		}
	}
	if privileged {
		// The node's devices, as they are: nothing is created in there.
		target, err := mkdirInRoot(root, "/dev")
		if err != nil {
			return err
		}
		if err := unix.Mount("/dev", target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount the node's /dev: %w", err)
		}
		return nil
	}
	dev := filepath.Join(root, "dev")
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		target := filepath.Join(dev, name)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
		if err := unix.Mount("/dev/"+name, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount /dev/%s: %w", name, err)
		}
	}
	for name, dest := range map[string]string{
		"ptmx":   "pts/ptmx",
		"fd":     "/proc/self/fd",
		"stdin":  "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(dest, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
	}
	return nil
}

// bindMount mounts m.Source at m.Target inside root, creating the target.
func bindMount(root string, m Mount) error {
	fi, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Target, err)
	}
	target, err := resolveInRoot(root, m.Target)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Target, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(target, 0o755)
	} else {
		err = createFile(target)
	}
	if err != nil {
		return fmt.Errorf("bind mount %s: create target: %w", m.Target, err)
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", m.Source, m.Target, err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", m.Target, err)
		}
	}
	// The root is a slave of the host's mounts (setupContainer); only a
	// HostToContainer mount stays one.
	if m.Propagation != PropagationHostToContainer {
		if err := unix.Mount("", target, "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", m.Target, err)
		}
	}
	return nil
}

func createFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// mkdirInRoot creates the directory path inside root and returns its host path.
func mkdirInRoot(root, path string) (string, error) {
	target, err := resolveInRoot(root, path)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	return target, nil
}

// resolveInRoot returns the host path of path inside root, following
// symbolic links as if root were "/": no link leads outside root. Components
// that do not exist are taken literally.
func resolveInRoot(root, path string) (string, error) {
	cur := "/"
	todo := strings.Split(path, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, next))
		if errors.Is(err, fs.ErrNotExist) {
			cur = next
			continue
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("resolve %s: %w", path, unix.ELOOP)
		}
		dest, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(dest, "/") {
			cur = "/"
		}
		todo = append(strings.Split(dest, "/"), todo...)
	}
	return filepath.Join(root, cur), nil
}

// pivotRoot makes root the root of the mount namespace and detaches the rest.
func pivotRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot root to %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	return nil
}

// lookPath finds the program to execute, inside the container's root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if err := checkExecutable(name); err != nil {
			return "", execError(name, err)
		}
		return name, nil
	}
	pathEnv, _ := lookupEnv(env, "PATH")
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", &InitError{Code: 127, Message: fmt.Sprintf("exec %q: executable file not found in $PATH", name)}
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return unix.EISDIR
	}
	if fi.Mode()&0o111 == 0 {
		return unix.EACCES
	}
	return nil
}

// execError describes a failure to execute name with the status a shell uses.
func execError(name string, err error) error {
	code := 126
	if errors.Is(err, fs.ErrNotExist) {
		code = 127
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		err = errno // drop the *PathError's repetition of the path
	}
	return &InitError{Code: code, Message: fmt.Sprintf("exec %q: %v", name, err)}
}

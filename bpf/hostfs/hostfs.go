// Package hostfs prepares the host filesystems the datapath needs, as an
// agent does on a machine nobody prepared: it mounts bpffs where pinned maps
// and links go, and checks that the cgroup the socket programs attach to is
// on cgroup v2, saying what to mount when it is not.
package hostfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountinfo is the mount table of the calling thread's mount namespace (a
// thread may have one of its own).
const mountinfo = "/proc/thread-self/mountinfo"

// BPFRoot returns the directory bpffs belongs on for pinDir: pinDir itself or
// its nearest existing ancestor (on a fresh machine /sys/fs/bpf, an empty
// directory of sysfs).
func BPFRoot(pinDir string) (string, error) {
	if !filepath.IsAbs(pinDir) {
		return "", fmt.Errorf("bpffs for %q: not an absolute path", pinDir)
	}
	dir := filepath.Clean(pinDir)
	for {
		st, err := os.Stat(dir)
		if err == nil {
			if !st.IsDir() {
				return "", fmt.Errorf("bpffs for %s: %s is not a directory", pinDir, dir)
			}
			return dir, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("bpffs for %s: %w", pinDir, err)
		}
		dir = filepath.Dir(dir)
	}
}

// MountBPF makes sure pinDir can be created on a bpf filesystem: when its
// bpffs root (see BPFRoot) is not on bpffs, it mounts one there. It refuses
// to mount over a directory that holds anything, which a mount would hide.
// It reports whether it mounted.
func MountBPF(log *slog.Logger, pinDir string) (bool, error) {
	root, err := BPFRoot(pinDir)
	if err != nil {
		return false, err
	}
	onBPF, err := isFS(root, unix.BPF_FS_MAGIC)
	if err != nil || onBPF {
		return false, err
	}
	// Two agents starting together must not stack two mounts: hold a lock on
	// the directory and look again under it.
	d, err := os.Open(root)
	if err != nil {
		return false, fmt.Errorf("mount bpffs on %s: %w", root, err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return false, fmt.Errorf("mount bpffs on %s: lock: %w", root, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN) //nolint:errcheck // closing unlocks too
	if onBPF, err := isFS(root, unix.BPF_FS_MAGIC); err != nil || onBPF {
		return false, err
	}
	if _, err := d.Readdirnames(1); !errors.Is(err, io.EOF) {
		if err == nil {
			return false, fmt.Errorf("%s is not on a bpf filesystem and is not empty, so it is no place to mount one: mount bpffs yourself (mount -t bpf bpf /sys/fs/bpf) and put the pin directory %s below it", root, pinDir)
		}
		return false, fmt.Errorf("mount bpffs on %s: %w", root, err)
	}
	if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs on %s (mount -t bpf bpf %s): %w", root, root, err)
	}
	log.Info("mounted bpffs", "path", root, "pinDir", pinDir)
	return true, nil
}

// CheckCgroup2 fails unless path is a directory on a cgroup v2 filesystem.
// Its error says what to mount, and names the cgroup2 mounts there are.
func CheckCgroup2(path string) error {
	var st unix.Statfs_t
	err := unix.Statfs(path, &st)
	if err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return nil
	}
	var problem, mount string
	switch {
	case errors.Is(err, unix.ENOENT):
		problem = "does not exist"
		mount = fmt.Sprintf("mkdir -p %s && mount -t cgroup2 none %s", path, path)
	case err != nil:
		return fmt.Errorf("cgroup v2 directory %s: %w", path, err)
	default:
		problem = "is not on a cgroup2 filesystem (it is " + fsName(st.Type) + ")"
		mount = "mount -t cgroup2 none " + path
		if !emptyDir(path) {
			// A mount on it would hide what it holds (e.g. cgroup v1
			// hierarchies): a hybrid host has cgroup2 below it.
			sub := filepath.Join(path, "unified")
			mount = fmt.Sprintf("mkdir -p %s && mount -t cgroup2 none %s, and use that", sub, sub)
		}
	}
	msg := fmt.Sprintf("cgroup v2 directory %s %s: mount cgroup2 (%s)", path, problem, mount)
	mounts, merr := Cgroup2Mounts()
	switch {
	case merr != nil:
		msg += " (" + merr.Error() + ")"
	case len(mounts) > 0:
		msg += " or use a directory on the cgroup2 mounted on " + strings.Join(mounts, ", ")
	default:
		msg += "; no cgroup2 is mounted on this host"
	}
	return errors.New(msg)
}

func emptyDir(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF)
}

// Cgroup2Mounts lists the mount points of cgroup2 filesystems in this mount
// namespace, in mount order.
func Cgroup2Mounts() ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("find cgroup2 mounts: %w", err)
	}
	defer f.Close()
	mounts, err := parseMounts(f, "cgroup2")
	if err != nil {
		return nil, fmt.Errorf("find cgroup2 mounts: %w", err)
	}
	return mounts, nil
}

// Mount is one line of /proc/self/mountinfo: where and what is mounted.
type Mount struct {
	Point, FSType string
}

// Mounts lists this mount namespace's mounts, in mount order.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// ParseMountInfo reads a mountinfo table.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// id parent dev root mount-point options [optional...] - fstype source options
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		rf, lf := strings.Fields(right), strings.Fields(left)
		if len(rf) > 0 && len(lf) > 4 {
			out = append(out, Mount{Point: unescape(lf[4]), FSType: rf[0]})
		}
	}
	return out, sc.Err()
}

// parseMounts returns the mount points of fstype in a mountinfo table.
func parseMounts(r io.Reader, fstype string) ([]string, error) {
	all, err := ParseMountInfo(r)
	var out []string
	for _, m := range all {
		if m.FSType == fstype {
			out = append(out, m.Point)
		}
	}
	return out, err
}

// unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isFS(path string, magic int64) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == magic, nil
}

// fsName names the filesystems a cgroup path is likely to be on.
func fsName(magic int64) string {
	switch magic {
	case unix.CGROUP_SUPER_MAGIC:
		return "a cgroup v1 hierarchy"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.SYSFS_MAGIC:
		return "sysfs"
	case unix.BPF_FS_MAGIC:
		return "bpffs"
	}
	return fmt.Sprintf("filesystem type %#x", magic)
}

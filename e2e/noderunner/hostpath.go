package noderunner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// HostPathMapping gives a path that pods name in hostPath volumes its place
// on this node: all nodes of a local cluster share one machine, so the
// node's "/sys/fs/bpf" is a directory of the machine's bpffs, its
// "/sys/fs/cgroup" its own cgroup v2 subtree, and so on.
type HostPathMapping struct {
	// Path is the host path as a pod names it, e.g. /sys/fs/bpf.
	Path string `json:"path"`
	// Source is the node's directory (or file) that Path means.
	Source string `json:"source"`
}

// systemHostPaths are the host paths a pod may mount without a mapping:
// they describe the machine's kernel, which every node shares, and are
// always mounted read-only so that no node can change another's view.
func systemHostPaths() []string {
	return []string{
		"/proc",            // as on a node: the one kernel's processes and sysctls (read-only)
		"/lib/modules",     // kernel modules of the running kernel
		"/usr/lib/modules", // the same on merged-/usr systems
		"/sys/kernel/btf",  // BTF of the running kernel, for CO-RE eBPF programs
		"/etc/os-release",
		"/usr/lib/os-release",
		"/etc/machine-id",
	}
}

// hostPaths resolves hostPath volumes for one node.
type hostPaths struct {
	mappings []HostPathMapping // longest Path first
}

func newHostPaths(m []HostPathMapping) hostPaths {
	sorted := append([]HostPathMapping(nil), m...)
	sort.SliceStable(sorted, func(i, j int) bool { return len(sorted[i].Path) > len(sorted[j].Path) })
	return hostPaths{mappings: sorted}
}

// validateHostPaths reports the first mapping at fault.
func validateHostPaths(m []HostPathMapping) error {
	seen := map[string]bool{}
	for i, hp := range m {
		switch {
		case !filepath.IsAbs(hp.Path) || filepath.Clean(hp.Path) != hp.Path:
			return fmt.Errorf("config: hostPaths[%d].path %q must be a clean absolute path", i, hp.Path)
		case !filepath.IsAbs(hp.Source):
			return fmt.Errorf("config: hostPaths[%d].source %q must be an absolute path", i, hp.Source)
		case seen[hp.Path]:
			return fmt.Errorf("config: hostPaths[%d].path %q is mapped twice", i, hp.Path)
		}
		seen[hp.Path] = true
	}
	return nil
}

// within reports whether p is base or below it.
func within(p, base string) bool {
	return p == base || base == "/" || strings.HasPrefix(p, base+"/")
}

// resolve returns the node's file for the host path p through the longest
// mapping that covers it, and whether it must be mounted read-only (a
// system path). A path outside every mapping and the system paths is an
// error: it is never mounted from the machine itself.
func (h hostPaths) resolve(p string) (string, bool, error) {
	if !filepath.IsAbs(p) {
		return "", false, fmt.Errorf("hostPath %q is not an absolute path", p)
	}
	clean := filepath.Clean(p)
	for _, m := range h.mappings {
		if within(clean, m.Path) {
			rest := strings.TrimPrefix(clean, m.Path)
			src := filepath.Join(m.Source, rest)
			if err := stayWithin(src, m.Source); err != nil {
				return "", false, fmt.Errorf("hostPath %q: %w", p, err)
			}
			return src, false, nil
		}
	}
	for _, sys := range systemHostPaths() {
		if within(clean, sys) {
			return clean, true, nil
		}
	}
	mapped := make([]string, 0, len(h.mappings))
	for _, m := range h.mappings {
		mapped = append(mapped, m.Path)
	}
	sort.Strings(mapped)
	return "", false, fmt.Errorf("hostPath %q is not available on this node: it is outside the node's host paths (%s) and the read-only system paths (%s)",
		p, strings.Join(mapped, ", "), strings.Join(systemHostPaths(), ", "))
}

// stayWithin fails when a symbolic link under base leads p outside base.
func stayWithin(p, base string) error {
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return nil // checked (and maybe created) by the type check
	}
	// The longest existing prefix of p decides where it leads.
	existing := p
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			return nil
		}
		existing = parent
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", existing, err)
	}
	if !within(real, realBase) {
		return fmt.Errorf("%s leads outside the node's %s (to %s)", p, base, real)
	}
	return nil
}

// checkHostPathType applies the hostPath volume's type as the kubelet does:
// the *OrCreate types create what is missing, the others require it.
func checkHostPathType(path string, t *corev1.HostPathType) error {
	if t == nil || *t == corev1.HostPathUnset {
		return nil
	}
	fi, err := os.Stat(path)
	missing := errors.Is(err, fs.ErrNotExist)
	if err != nil && !missing {
		return fmt.Errorf("hostPath type check: %w", err)
	}
	switch *t {
	case corev1.HostPathDirectoryOrCreate:
		if missing {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return fmt.Errorf("hostPath type check: create directory: %w", err)
			}
			return nil
		}
		if !fi.IsDir() {
			return fmt.Errorf("hostPath type check failed: %s is not a directory", path)
		}
	case corev1.HostPathFileOrCreate:
		if missing {
			// As the kubelet: the file, not its parent directory.
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return fmt.Errorf("hostPath type check: create file: %w", err)
			}
			return f.Close()
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("hostPath type check failed: %s is not a file", path)
		}
	case corev1.HostPathDirectory, corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
		if missing {
			return fmt.Errorf("hostPath type check failed: %s does not exist", path)
		}
		var ok bool
		var what string
		switch *t {
		case corev1.HostPathDirectory:
			ok, what = fi.IsDir(), "a directory"
		case corev1.HostPathFile:
			ok, what = fi.Mode().IsRegular(), "a file"
		case corev1.HostPathSocket:
			ok, what = fi.Mode()&fs.ModeSocket != 0, "a socket"
		case corev1.HostPathCharDev:
			ok, what = fi.Mode()&fs.ModeCharDevice != 0, "a character device"
		case corev1.HostPathBlockDev:
			ok, what = fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0, "a block device"
		}
		if !ok {
			return fmt.Errorf("hostPath type check failed: %s is not %s", path, what)
		}
	default:
		return fmt.Errorf("hostPath type %q is not supported", *t)
	}
	return nil
}

//go:build linux

// Package runtime runs a pod's container as processes, like a minimal OCI
// runtime: an overlay of the image root filesystem, its own mount, PID, UTS and
// IPC namespaces, the pod's network namespace and cgroup, and the container's
// output in a CRI-format log file.
//
// Go cannot unshare a mount namespace or join one from a multi-threaded
// process, so Start re-executes the host binary with the hidden argument
// InitArg; the host binary's main must hand that invocation to Init (see Init).
//
// A container outlives the runtime that started it: its output goes through
// FIFOs in its state directory, and a later runtime takes it over with Adopt.
package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// InitArg is the first argument of the re-executed host binary that marks a
// container init; the host binary's main passes the arguments after it to Init.
const InitArg = "__membrane-container-init"

// defaultPath is the PATH of a container whose environment sets none (as
// Docker and containerd do).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Mount is a bind mount of a host file or directory into the container.
type Mount struct {
	// Source is a host file or directory.
	Source string `json:"source"`
	// Target is the absolute path inside the container; missing files and
	// directories are created in the container's writable layer.
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// Propagation is "" (private: no mount events either way) or
	// PropagationHostToContainer (rslave: mounts made below Source on the
	// host appear in the container).
	Propagation string `json:"propagation,omitempty"`
}

// PropagationHostToContainer makes a mount receive the host's mount events.
const PropagationHostToContainer = "HostToContainer"

// Spec describes one container instance.
type Spec struct {
	// ID is unique per container, e.g. <podUID>-<container>.
	ID string `json:"id"`
	// Hostname is the pod's name.
	Hostname string `json:"hostname"`
	// RootFS is the image's root filesystem: the read-only lower layer, shared
	// by many containers and never written.
	RootFS string `json:"rootfs"`
	// StateDir is a per-container directory the runtime owns (overlay upper,
	// work and merged directories, the spec and the output FIFOs); Start
	// empties the writable layer. Adopt finds a running container by it.
	StateDir string `json:"stateDir"`
	// NetNS is the pod's network namespace (a bind-mounted nsfs file); empty
	// keeps the caller's network namespace (hostNetwork).
	NetNS string `json:"netns,omitempty"`
	// HostPID keeps the caller's PID namespace (hostPID): the container
	// sees, and is seen by, the machine's processes.
	HostPID bool `json:"hostPID,omitempty"`
	// Cgroup is an existing cgroup v2 directory; the container is born in it.
	// Empty keeps the caller's cgroup.
	Cgroup string `json:"cgroup,omitempty"`
	// Argv is the resolved command; Argv[0] without a "/" is looked up in the
	// PATH of Env, inside the container.
	Argv []string `json:"argv"`
	// Env holds KEY=value pairs; PATH and HOSTNAME get defaults when unset.
	Env []string `json:"env,omitempty"`
	// WorkingDir defaults to "/"; it is created when missing.
	WorkingDir string  `json:"workingDir,omitempty"`
	Mounts     []Mount `json:"mounts,omitempty"`
	// Security holds privileges and capabilities; the zero value keeps the
	// runtime's capabilities with a read-only /sys and a minimal /dev.
	Security Security `json:"security,omitempty"`
	// LogPath receives stdout and stderr in the CRI log format; it is
	// appended to, and its directory is created.
	LogPath string `json:"logPath"`
}

// Validate reports the first field at fault.
func (s Spec) Validate() error {
	switch {
	case s.ID == "":
		return errors.New("spec: id is empty")
	case !filepath.IsAbs(s.RootFS):
		return fmt.Errorf("spec %s: rootfs %q is not an absolute path", s.ID, s.RootFS)
	case !filepath.IsAbs(s.StateDir):
		return fmt.Errorf("spec %s: stateDir %q is not an absolute path", s.ID, s.StateDir)
	case s.NetNS != "" && !filepath.IsAbs(s.NetNS):
		return fmt.Errorf("spec %s: netns %q is not an absolute path", s.ID, s.NetNS)
	case s.Cgroup != "" && !filepath.IsAbs(s.Cgroup):
		return fmt.Errorf("spec %s: cgroup %q is not an absolute path", s.ID, s.Cgroup)
	case len(s.Argv) == 0 || s.Argv[0] == "":
		return fmt.Errorf("spec %s: no command", s.ID)
	case !filepath.IsAbs(s.LogPath):
		return fmt.Errorf("spec %s: logPath %q is not an absolute path", s.ID, s.LogPath)
	case s.WorkingDir != "" && !strings.HasPrefix(s.WorkingDir, "/"):
		return fmt.Errorf("spec %s: workingDir %q is not absolute", s.ID, s.WorkingDir)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !strings.HasPrefix(m.Target, "/") {
			return fmt.Errorf("spec %s: mount %q -> %q: source and target must be absolute", s.ID, m.Source, m.Target)
		}
		if m.Propagation != "" && m.Propagation != PropagationHostToContainer {
			return fmt.Errorf("spec %s: mount %q: propagation %q is not supported (want \"\" or %s)", s.ID, m.Target, m.Propagation, PropagationHostToContainer)
		}
	}
	if s.Security.Privileged && s.Security.LimitCapabilities {
		return fmt.Errorf("spec %s: security: a privileged container keeps every capability; limitCapabilities must be unset", s.ID)
	}
	if _, err := capabilityMask(s.Security.Capabilities); err != nil {
		return fmt.Errorf("spec %s: security.capabilities: %w", s.ID, err)
	}
	return nil
}

// env returns the environment the container's processes get.
func (s Spec) env() []string {
	env := append([]string(nil), s.Env...)
	if _, ok := lookupEnv(env, "PATH"); !ok {
		env = append(env, "PATH="+defaultPath)
	}
	if _, ok := lookupEnv(env, "HOSTNAME"); !ok && s.Hostname != "" {
		env = append(env, "HOSTNAME="+s.Hostname)
	}
	return env
}

// lookupEnv returns the last value of key in env, as a shell would see it.
func lookupEnv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// Layout of StateDir.
func (s Spec) upperDir() string  { return filepath.Join(s.StateDir, "upper") }
func (s Spec) workDir() string   { return filepath.Join(s.StateDir, "work") }
func (s Spec) mergedDir() string { return filepath.Join(s.StateDir, "merged") }
func (s Spec) specFile() string  { return filepath.Join(s.StateDir, "spec.json") }

// writeSpec prepares StateDir for a new instance: a fresh writable layer and
// the spec file that Init reads.
func writeSpec(s Spec) error {
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	for _, dir := range []string{s.upperDir(), s.workDir(), s.mergedDir()} {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("reset state dir: %w", err)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("reset state dir: %w", err)
		}
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if err := os.WriteFile(s.specFile(), raw, 0o600); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

// readSpec reads the spec file written by writeSpec.
func readSpec(path string) (Spec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Spec{}, fmt.Errorf("read container spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return Spec{}, fmt.Errorf("parse container spec %s: %w", path, err)
	}
	return s, s.Validate()
}

package runtime

import (
	"fmt"
	"sort"
)

// Security is what a container may do beyond its namespaces.
type Security struct {
	// Privileged keeps every capability, mounts /sys read-write and gives
	// the container the node's /dev.
	Privileged bool `json:"privileged,omitempty"`
	// LimitCapabilities restricts an unprivileged container to
	// Capabilities (which may be empty); without it the container keeps the
	// runtime's own capabilities.
	LimitCapabilities bool `json:"limitCapabilities,omitempty"`
	// Capabilities are names such as CAP_NET_ADMIN.
	Capabilities []string `json:"capabilities,omitempty"`
}

// capabilityNumbers are the Linux capabilities by name (linux/capability.h).
func capabilityNumbers() map[string]int {
	return map[string]int{
		"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
		"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
		"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
		"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
		"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
		"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
		"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
		"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
		"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
		"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
		"CAP_CHECKPOINT_RESTORE": 40,
	}
}

// KnownCapability reports whether name (CAP_ prefixed) is a Linux capability.
func KnownCapability(name string) bool {
	_, ok := capabilityNumbers()[name]
	return ok
}

// AllCapabilities returns every capability name, sorted.
func AllCapabilities() []string {
	var out []string
	for n := range capabilityNumbers() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// capabilityMask is the bit set of names.
func capabilityMask(names []string) (uint64, error) {
	nums := capabilityNumbers()
	var mask uint64
	for _, n := range names {
		bit, ok := nums[n]
		if !ok {
			return 0, fmt.Errorf("unknown capability %q", n)
		}
		mask |= 1 << bit
	}
	return mask, nil
}

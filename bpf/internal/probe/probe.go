// Package probe checks the kernel features a datapath needs and reports
// every missing one in a single error.
package probe

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Map is a map type a datapath creates, with the kernel that brought it.
type Map struct {
	Type  ebpf.MapType
	Since string
}

// Helper is a helper a datapath's programs call, with the kernel that
// brought it (to that program type).
type Helper struct {
	Fn    asm.BuiltinFunc
	Since string
}

// Requirements are a datapath's maps and helpers.
type Requirements struct {
	Maps []Map
	// NoPrealloc: the datapath creates maps with BPF_F_NO_PREALLOC.
	NoPrealloc bool
	// Helpers are probed in ProgramType programs, named ProgramName in
	// errors (e.g. "tc").
	ProgramType ebpf.ProgramType
	ProgramName string
	Helpers     []Helper
}

// Missing probes every requirement and returns one error per missing
// feature (matching ebpf.ErrNotSupported) or failed probe.
func (r Requirements) Missing() []error {
	var missing []error
	for _, m := range r.Maps {
		if err := features.HaveMapType(m.Type); err != nil {
			missing = append(missing, fmt.Errorf("%s map (%s): %w", m.Type, m.Since, err))
		}
	}
	if r.NoPrealloc {
		if err := features.HaveMapFlag(features.BPF_F_NO_PREALLOC); err != nil {
			missing = append(missing, fmt.Errorf("BPF_F_NO_PREALLOC (Linux 4.6): %w", err))
		}
	}
	for _, h := range r.Helpers {
		if err := features.HaveProgramHelper(r.ProgramType, h.Fn); err != nil {
			missing = append(missing, fmt.Errorf("helper %s in %s programs (%s): %w", h.Fn, r.ProgramName, h.Since, err))
		}
	}
	return missing
}

// Unsupported lists every missing feature of What on one line. It matches
// ebpf.ErrNotSupported (errors.Is) when a feature is missing, and a
// probe's own error (e.g. unix.EPERM) when a probe failed.
type Unsupported struct {
	What    string // e.g. "the policy datapath"
	Missing []error
}

func (e *Unsupported) Error() string {
	msgs := make([]string, len(e.Missing))
	for i, err := range e.Missing {
		msgs[i] = err.Error()
	}
	return e.What + " is not supported here: " + strings.Join(msgs, "; ")
}

func (e *Unsupported) Unwrap() []error { return e.Missing }

// Check returns nil when nothing is missing, else an *Unsupported.
func Check(what string, missing []error) error {
	if len(missing) == 0 {
		return nil
	}
	return &Unsupported{What: what, Missing: missing}
}

package policy

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// Supported reports whether the running kernel has everything the policy
// datapath needs, naming each missing piece (tcx is not needed: without it
// Load falls back to clsact filters). Probes load tiny programs, so they need
// the same privileges as Load (CAP_BPF and CAP_NET_ADMIN, or root); without
// them the error says so rather than blaming the kernel.
//
// The error matches ebpf.ErrNotSupported (errors.Is) when a feature is
// missing, and the probe's own error (e.g. unix.EPERM) when a probe failed.
func Supported() error {
	var missing []error
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		missing = append(missing, fmt.Errorf("tc (sched_cls) programs (Linux 4.1): %w", err))
	}
	for _, mt := range []struct {
		typ   ebpf.MapType
		since string
	}{
		{ebpf.Hash, "Linux 3.19"},
		{ebpf.LRUHash, "Linux 4.10"},
		{ebpf.LPMTrie, "Linux 4.11"},
		{ebpf.PerCPUArray, "Linux 4.6"},
		{ebpf.RingBuf, "Linux 5.8"},
	} {
		if err := features.HaveMapType(mt.typ); err != nil {
			missing = append(missing, fmt.Errorf("%s map (%s): %w", mt.typ, mt.since, err))
		}
	}
	if err := features.HaveMapFlag(features.BPF_F_NO_PREALLOC); err != nil {
		missing = append(missing, fmt.Errorf("BPF_F_NO_PREALLOC (Linux 4.6): %w", err))
	}
	for _, h := range []struct {
		fn    asm.BuiltinFunc
		since string
	}{
		{asm.FnSkbLoadBytes, "Linux 4.5"},
		{asm.FnKtimeGetNs, "Linux 4.1"},
		{asm.FnRingbufReserve, "Linux 5.8"},
		{asm.FnRingbufSubmit, "Linux 5.8"},
	} {
		if err := features.HaveProgramHelper(ebpf.SchedCLS, h.fn); err != nil {
			missing = append(missing, fmt.Errorf("helper %s in tc programs (%s): %w", h.fn, h.since, err))
		}
	}
	if len(missing) > 0 {
		return &unsupportedError{missing: missing}
	}
	return nil
}

// unsupportedError lists every missing feature on one line.
type unsupportedError struct{ missing []error }

func (e *unsupportedError) Error() string {
	msgs := make([]string, len(e.missing))
	for i, err := range e.missing {
		msgs[i] = err.Error()
	}
	return "the policy datapath is not supported here: " + strings.Join(msgs, "; ")
}

func (e *unsupportedError) Unwrap() []error { return e.missing }

// haveTCX reports whether the kernel has tcx links (Linux 6.6): attaching a
// trivial program to an interface that cannot exist fails with ENODEV where
// it does.
func haveTCX() (bool, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		return false, fmt.Errorf("probe tcx: load a tc program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		l.Close()
		return true, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return false, nil
	}
	return true, nil
}

package policy

import (
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	"github.com/membrane-mesh/membrane/bpf/internal/probe"
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
	missing = append(missing, probe.Requirements{
		Maps: []probe.Map{
			{Type: ebpf.Hash, Since: "Linux 3.19"},
			{Type: ebpf.LRUHash, Since: "Linux 4.10"},
			{Type: ebpf.LPMTrie, Since: "Linux 4.11"},
			{Type: ebpf.PerCPUArray, Since: "Linux 4.6"},
			{Type: ebpf.RingBuf, Since: "Linux 5.8"},
		},
		NoPrealloc:  true,
		ProgramType: ebpf.SchedCLS,
		ProgramName: "tc",
		Helpers: []probe.Helper{
			{Fn: asm.FnSkbLoadBytes, Since: "Linux 4.5"},
			{Fn: asm.FnKtimeGetNs, Since: "Linux 4.1"},
			{Fn: asm.FnRingbufReserve, Since: "Linux 5.8"},
			{Fn: asm.FnRingbufSubmit, Since: "Linux 5.8"},
		},
	}.Missing()...)
	return probe.Check("the policy datapath", missing)
}

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

// HaveHostRouting reports whether the kernel has what Options.HostRouting
// needs: bpf_redirect_peer in tc programs (Linux 5.10).
func HaveHostRouting() (bool, error) {
	err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirectPeer)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return false, nil
	}
	return false, fmt.Errorf("probe bpf_redirect_peer: %w", err)
}

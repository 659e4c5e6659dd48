package socklb

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/bpf/internal/probe"
)

// Supported reports whether the running kernel has everything the socket load
// balancer uses, naming each missing piece. Probes load tiny programs, so
// they need the same privileges as Load (CAP_BPF or root); without them the
// error says so rather than blaming the kernel.
//
// The error matches ebpf.ErrNotSupported (errors.Is) when a feature is
// missing, and the probe's own error (e.g. unix.EPERM) when a probe failed.
func Supported() error {
	var missing []error
	for _, h := range hooks() {
		if err := probeAttachType(h.attach); err != nil {
			missing = append(missing, fmt.Errorf("cgroup/%s hook (%s): %w", h.section, h.since, err))
		}
	}
	missing = append(missing, probe.Requirements{
		Maps: []probe.Map{
			{Type: ebpf.Hash, Since: "Linux 3.19"},
			{Type: ebpf.LRUHash, Since: "Linux 4.10"},
			{Type: ebpf.PerCPUArray, Since: "Linux 4.6"},
		},
		NoPrealloc:  true,
		ProgramType: ebpf.CGroupSockAddr,
		ProgramName: "cgroup sock_addr",
		Helpers: []probe.Helper{
			{Fn: asm.FnGetSocketCookie, Since: "Linux 5.0 for sock_addr"},
			{Fn: asm.FnGetNetnsCookie, Since: "Linux 5.7 for sock_addr"},
			{Fn: asm.FnGetPrandomU32, Since: "Linux 4.1"},
			{Fn: asm.FnKtimeGetNs, Since: "Linux 4.1"},
			{Fn: asm.FnSetRetval, Since: "Linux 5.18; without it a service without backends refuses with EPERM, not ECONNREFUSED"},
		},
	}.Missing()...)
	return probe.Check("socket load balancing", missing)
}

// haveSetRetval reports whether connect4/sendmsg4 may call bpf_set_retval.
func haveSetRetval() (bool, error) {
	err := features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSetRetval)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return false, nil
	}
	return false, fmt.Errorf("probe bpf_set_retval: %w", err)
}

// probeAttachType loads a trivial sock_addr program for attach; the kernel
// rejects expected attach types it does not know.
func probeAttachType(attach ebpf.AttachType) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: attach,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	})
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("kernel rejects attach type %s: %w", attach, ebpf.ErrNotSupported)
	} else if err != nil {
		return fmt.Errorf("load a %s program: %w", attach, err)
	}
	return prog.Close()
}

package socklb

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
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
	for _, mt := range []struct {
		typ   ebpf.MapType
		since string
	}{
		{ebpf.Hash, "Linux 3.19"},
		{ebpf.LRUHash, "Linux 4.10"},
		{ebpf.PerCPUArray, "Linux 4.6"},
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
		{asm.FnGetSocketCookie, "Linux 5.0 for sock_addr"},
		{asm.FnGetNetnsCookie, "Linux 5.7 for sock_addr"},
		{asm.FnGetPrandomU32, "Linux 4.1"},
		{asm.FnKtimeGetNs, "Linux 4.1"},
		{asm.FnSetRetval, "Linux 5.18; without it a service without backends refuses with EPERM, not ECONNREFUSED"},
	} {
		if err := features.HaveProgramHelper(ebpf.CGroupSockAddr, h.fn); err != nil {
			missing = append(missing, fmt.Errorf("helper %s in cgroup sock_addr programs (%s): %w", h.fn, h.since, err))
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
	return "socket load balancing is not supported here: " + strings.Join(msgs, "; ")
}

func (e *unsupportedError) Unwrap() []error { return e.missing }

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

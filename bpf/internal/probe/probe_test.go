package probe

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func TestCheck(t *testing.T) {
	if err := Check("x", nil); err != nil {
		t.Fatalf("nothing missing: %v", err)
	}
	err := Check("the policy datapath", []error{
		fmt.Errorf("RingBuf map (Linux 5.8): %w", ebpf.ErrNotSupported),
		fmt.Errorf("helper x: %w", unix.EPERM),
	})
	want := "the policy datapath is not supported here: RingBuf map (Linux 5.8): not supported; helper x: operation not permitted"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
	if !errors.Is(err, ebpf.ErrNotSupported) || !errors.Is(err, unix.EPERM) {
		t.Errorf("%v does not match both the missing feature and the failed probe", err)
	}
}

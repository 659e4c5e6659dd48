package policy

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/bpf/internal/bpftest"
)

// TestCleanup removes the policy datapath from a node with tcx links on
// two pod interfaces and leaves what is not ours: another program on one of
// them, an unattached veth, a map pinned outside the pin dir and a foreign
// pin inside it (which keeps the dir).
func TestCleanup(t *testing.T) {
	requireTCX(t)
	e := newEnv(t, Options{})
	pods := []int{e.veth("mbr0"), e.veth("mbr1")}
	other := e.veth("other0")
	for _, p := range pods {
		e.attach(e.dp, p)
	}
	must(t, e.dp.Close())

	foreignProg, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}, // TCX_NEXT
	})
	must(t, err)
	defer foreignProg.Close()
	var foreignLink link.Link
	e.in(func() (err error) {
		foreignLink, err = link.AttachTCX(link.TCXOptions{Interface: pods[0], Program: foreignProg, Attach: ebpf.AttachTCXIngress})
		return err
	})
	defer foreignLink.Close()
	outside := filepath.Join(bpftest.PinDir(t), "foreign_map")
	inside := filepath.Join(e.pinDir, "foreign_map")
	for _, p := range []string{outside, inside} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		must(t, err)
		must(t, m.Pin(p))
		m.Close()
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	e.in(func() error { return Cleanup(log, e.pinDir) })
	t.Logf("Cleanup:\n%s", logs.String())
	foreignID := progID(t, foreignProg)
	for i, p := range pods {
		in, eg := e.tcxPrograms(p)
		if want := map[bool]int{true: 1, false: 0}[i == 0]; len(in) != want || len(eg) != 0 || (want == 1 && in[0] != foreignID) {
			t.Errorf("mbr%d after Cleanup: ingress %v egress %v, want only the foreign program", i, in, eg)
		}
	}
	e.in(func() error {
		if _, err := netlink.LinkByIndex(other); err != nil {
			return err
		}
		for _, p := range pods {
			if _, err := netlink.LinkByIndex(p); err != nil {
				return err
			}
		}
		return nil
	})
	entries, err := os.ReadDir(e.pinDir)
	must(t, err)
	if len(entries) != 1 || entries[0].Name() != "foreign_map" {
		t.Errorf("pin dir after Cleanup holds %v, want only foreign_map", entries)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("map pinned outside the pin dir: %v", err)
	}
	if got := strings.Count(logs.String(), "detached policy program"); got != 2*len(pods) {
		t.Errorf("logged %d detached programs, want %d", got, 2*len(pods))
	}

	// Again: nothing to do, nothing logged.
	logs.Reset()
	e.in(func() error { return Cleanup(log, e.pinDir) })
	if logs.Len() != 0 {
		t.Errorf("second Cleanup logged:\n%s", logs.String())
	}
	must(t, os.Remove(inside))
	e.in(func() error { return Cleanup(log, e.pinDir) })
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after the last Cleanup: %v", err)
	}
	e.in(func() error { return Cleanup(log, e.pinDir) })
}

// TestCleanupLegacyTC removes clsact filters, ours only: a foreign filter
// on the same hook stays.
func TestCleanupLegacyTC(t *testing.T) {
	e := newEnv(t, Options{forceLegacyTC: true})
	pod := e.veth("mbr0")
	e.attach(e.dp, pod)
	must(t, e.dp.Close())
	foreignProg, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	must(t, err)
	defer foreignProg.Close()
	e.in(func() error {
		return netlink.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: pod, Parent: handleMinIngress, Handle: 1, Priority: 2, Protocol: unix.ETH_P_ALL},
			Fd:          foreignProg.FD(), Name: "foreign", DirectAction: true,
		})
	})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	e.in(func() error { return Cleanup(log, e.pinDir) })
	in, eg := e.legacyFilters(pod)
	if len(in) != 1 || !strings.HasPrefix(in[0].Name, "foreign") || len(eg) != 0 {
		t.Errorf("filters after Cleanup: ingress %+v egress %+v, want only the foreign one", in, eg)
	}
	if got := strings.Count(logs.String(), "removed policy clsact filter"); got != 2 {
		t.Errorf("logged %d removed filters, want 2:\n%s", got, logs.String())
	}
	logs.Reset()
	e.in(func() error { return Cleanup(log, e.pinDir) })
	if logs.Len() != 0 {
		t.Errorf("second Cleanup logged:\n%s", logs.String())
	}
}

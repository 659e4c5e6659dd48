package socklb

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

	"github.com/membrane-mesh/membrane/bpf/internal/bpftest"
)

// TestCleanup removes the socket LB from a half-used node and leaves what
// is not ours: a program of someone else on the same cgroup, a map pinned
// outside the pin dir, and a foreign pin inside it (which keeps the dir).
func TestCleanup(t *testing.T) {
	e := newEnv(t, Options{MaxServices: 1024, MaxBackends: 1024, MaxSockets: 1024, MaxAffinity: 1024})
	must(t, e.dp.Close())

	foreignProg, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSockAddr, AttachType: ebpf.AttachCGroupInet4Connect, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	must(t, err)
	defer foreignProg.Close()
	foreignLink, err := link.AttachCgroup(link.CgroupOptions{Path: e.cgroup, Attach: ebpf.AttachCGroupInet4Connect, Program: foreignProg})
	must(t, err)
	defer foreignLink.Close()
	outside := filepath.Join(bpftest.PinDir(t), "foreign_map")
	inside := filepath.Join(e.pinDir, "foreign_map")
	for _, p := range []string{outside, inside} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		must(t, err)
		must(t, m.Pin(p))
		m.Close()
	}
	if n := attachedPrograms(t, e.cgroup); n != len(hooks())+1 {
		t.Fatalf("%d programs on the cgroup before Cleanup, want %d", n, len(hooks())+1)
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	must(t, Cleanup(log, e.pinDir))
	t.Logf("Cleanup:\n%s", logs.String())
	if n := attachedPrograms(t, e.cgroup); n != 1 {
		t.Errorf("%d programs on the cgroup after Cleanup, want only the foreign one", n)
	}
	entries, err := os.ReadDir(e.pinDir)
	must(t, err)
	if len(entries) != 1 || entries[0].Name() != "foreign_map" {
		t.Errorf("pin dir after Cleanup holds %v, want only foreign_map", entries)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("map pinned outside the pin dir: %v", err)
	}
	if got := strings.Count(logs.String(), "detached socket LB program"); got != len(hooks()) {
		t.Errorf("logged %d detached programs, want %d", got, len(hooks()))
	}
	spec, err := loadSocklb()
	must(t, err)
	pinned := 0
	for _, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			pinned++
		}
	}
	if got := strings.Count(logs.String(), "removed socket LB map pin"); got != pinned || pinned == 0 {
		t.Errorf("logged %d removed map pins, want %d", got, pinned)
	}

	// Again: nothing to do, nothing logged.
	logs.Reset()
	must(t, Cleanup(log, e.pinDir))
	if logs.Len() != 0 {
		t.Errorf("second Cleanup logged:\n%s", logs.String())
	}
	// Without the foreign pin the dir goes too; then a missing dir is fine.
	must(t, os.Remove(inside))
	must(t, Cleanup(log, e.pinDir))
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after the last Cleanup: %v", err)
	}
	must(t, Cleanup(log, e.pinDir))
}

package policy

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// tcxPrograms returns the programs on ifindex's tcx ingress and egress.
func (e *testEnv) tcxPrograms(ifindex int) (ingress, egress []ebpf.ProgramID) {
	e.tb.Helper()
	e.in(func() error {
		for _, a := range []struct {
			at  ebpf.AttachType
			out *[]ebpf.ProgramID
		}{{ebpf.AttachTCXIngress, &ingress}, {ebpf.AttachTCXEgress, &egress}} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: a.at})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				*a.out = append(*a.out, p.ID)
			}
		}
		return nil
	})
	return ingress, egress
}

// legacyFilters returns the BPF filters on ifindex's clsact ingress and egress.
func (e *testEnv) legacyFilters(ifindex int) (ingress, egress []*netlink.BpfFilter) {
	e.tb.Helper()
	e.in(func() error {
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		for _, p := range []struct {
			parent uint32
			out    *[]*netlink.BpfFilter
		}{{handleMinIngress, &ingress}, {handleMinEgress, &egress}} {
			fs, err := netlink.FilterList(l, p.parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					*p.out = append(*p.out, bf)
				}
			}
		}
		return nil
	})
	return ingress, egress
}

func progID(tb testing.TB, p *ebpf.Program) ebpf.ProgramID {
	tb.Helper()
	info, err := p.Info()
	must(tb, err)
	id, ok := info.ID()
	if !ok {
		tb.Fatal("no program ID")
	}
	return id
}

func (e *testEnv) attach(dp *Datapath, ifindex int) {
	e.tb.Helper()
	e.in(func() error { return dp.Attach(ifindex) })
}

func (e *testEnv) detach(dp *Datapath, ifindex int) {
	e.tb.Helper()
	e.in(func() error { return dp.Detach(ifindex) })
}

func TestAttachTCX(t *testing.T) {
	requireSupported(t)
	requireTCX(t)
	e := newEnv(t, Options{})
	pod := e.veth("mbr0")
	e.attach(e.dp, pod)
	in, eg := e.tcxPrograms(pod)
	from, to := progID(t, e.dp.progs.PolicyFromPod), progID(t, e.dp.progs.PolicyToPod)
	if !slices.Equal(in, []ebpf.ProgramID{from}) || !slices.Equal(eg, []ebpf.ProgramID{to}) {
		t.Fatalf("tcx programs ingress %v egress %v, want [%d] [%d]", in, eg, from, to)
	}
	links := pinnedLinkIDs(t, e.pinDir, pod)

	// Again: nothing changes.
	e.attach(e.dp, pod)
	if got := pinnedLinkIDs(t, e.pinDir, pod); !slices.Equal(got, links) {
		t.Errorf("links after a second attach %v, want %v", got, links)
	}
	if in2, eg2 := e.tcxPrograms(pod); !slices.Equal(in2, in) || !slices.Equal(eg2, eg) {
		t.Errorf("programs changed on a second attach: %v %v", in2, eg2)
	}
	attached, err := e.dp.Attached()
	must(t, err)
	if !slices.Equal(attached, []int{pod}) {
		t.Errorf("Attached() %v, want [%d]", attached, pod)
	}

	// A restart (a new Load on the pin dir) swaps the programs into the
	// same links: the interface is never without a program.
	dp2 := e.load()
	if got := pinnedLinkIDs(t, e.pinDir, pod); !slices.Equal(got, links) {
		t.Errorf("links after restart %v, want %v (updated in place)", got, links)
	}
	in, eg = e.tcxPrograms(pod)
	from, to = progID(t, dp2.progs.PolicyFromPod), progID(t, dp2.progs.PolicyToPod)
	if !slices.Equal(in, []ebpf.ProgramID{from}) || !slices.Equal(eg, []ebpf.ProgramID{to}) {
		t.Errorf("after restart: ingress %v egress %v, want the new programs [%d] [%d]", in, eg, from, to)
	}

	e.detach(dp2, pod)
	if in, eg := e.tcxPrograms(pod); len(in)+len(eg) != 0 {
		t.Errorf("programs after detach: %v %v", in, eg)
	}
	e.detach(dp2, pod) // again: fine
	if attached, _ := dp2.Attached(); len(attached) != 0 {
		t.Errorf("Attached() after detach: %v", attached)
	}

	// An interface that goes away leaves a defunct link; the next Load
	// drops its pins.
	gone := e.veth("mbr1")
	e.attach(dp2, gone)
	e.in(func() error {
		l, err := netlink.LinkByIndex(gone)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	attached, err = dp2.Attached()
	must(t, err)
	if len(attached) != 0 {
		t.Errorf("Attached() after the interface went: %v", attached)
	}
	e.load()
	for _, h := range hooks() {
		if _, err := os.Stat(linkPin(e.pinDir, gone, h)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin of a removed interface still there after Load: %v", err)
		}
	}
}

func pinnedLinkIDs(tb testing.TB, pinDir string, ifindex int) []link.ID {
	tb.Helper()
	var ids []link.ID
	for _, h := range hooks() {
		l, err := link.LoadPinnedLink(linkPin(pinDir, ifindex, h), nil)
		must(tb, err)
		info, err := l.Info()
		l.Close()
		must(tb, err)
		ids = append(ids, info.ID)
	}
	return ids
}

func TestAttachLegacyTC(t *testing.T) {
	e := newEnv(t, Options{forceLegacyTC: true})
	pod := e.veth("mbr0")
	e.attach(e.dp, pod)
	e.attach(e.dp, pod)
	in, eg := e.legacyFilters(pod)
	if len(in) != 1 || len(eg) != 1 || in[0].Name != policyProgPolicyFromPod || eg[0].Name != policyProgPolicyToPod || !in[0].DirectAction {
		t.Fatalf("filters ingress %+v egress %+v", in, eg)
	}
	first := in[0].Id
	var attached []int
	e.in(func() (err error) { attached, err = e.dp.Attached(); return err })
	if !slices.Equal(attached, []int{pod}) {
		t.Errorf("Attached() %v, want [%d]", attached, pod)
	}

	// Restart: the filters get the new programs in place.
	var dp2 *Datapath
	dp2 = e.load()
	in, _ = e.legacyFilters(pod)
	if len(in) != 1 || in[0].Id == first || in[0].Id != int(progID(t, dp2.progs.PolicyFromPod)) {
		t.Errorf("after restart: ingress filters %+v, want one with program %d", in, progID(t, dp2.progs.PolicyFromPod))
	}
	e.detach(dp2, pod)
	if in, eg := e.legacyFilters(pod); len(in)+len(eg) != 0 {
		t.Errorf("filters after detach: %+v %+v", in, eg)
	}
	e.detach(dp2, pod)

	// Unload finds and removes filters too.
	e.attach(dp2, pod)
	e.in(func() error { return Unload(e.pinDir) })
	if in, eg := e.legacyFilters(pod); len(in)+len(eg) != 0 {
		t.Errorf("filters after Unload: %+v %+v", in, eg)
	}
}

func TestUnload(t *testing.T) {
	requireSupported(t)
	requireTCX(t)
	e := newEnv(t, Options{})
	pod := e.veth("mbr0")
	e.attach(e.dp, pod)
	must(t, e.dp.Close())
	e.in(func() error { return Unload(e.pinDir) })
	if in, eg := e.tcxPrograms(pod); len(in)+len(eg) != 0 {
		t.Errorf("programs after Unload: %v %v", in, eg)
	}
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after Unload: %v", err)
	}
	e.in(func() error { return Unload(e.pinDir) }) // again: fine
}

// TestAttachFirstInChain: a program already on the interface cannot pass
// packets around policy: ours goes first.
func TestAttachFirstInChain(t *testing.T) {
	requireSupported(t)
	requireTCX(t)
	e := newEnv(t, Options{})
	pod := e.veth("mbr0")
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0), // TCX_PASS: ends the chain
			asm.Return(),
		},
	})
	must(t, err)
	defer other.Close()
	var l link.Link
	e.in(func() (err error) {
		l, err = link.AttachTCX(link.TCXOptions{Interface: pod, Program: other, Attach: ebpf.AttachTCXIngress})
		return err
	})
	defer l.Close()
	e.attach(e.dp, pod)
	in, _ := e.tcxPrograms(pod)
	if want := []ebpf.ProgramID{progID(t, e.dp.progs.PolicyFromPod), progID(t, other)}; !slices.Equal(in, want) {
		t.Errorf("tcx ingress chain %v, want %v (policy first)", in, want)
	}
}

package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// hook is one direction of a host-side interface and the program that goes there.
type hook struct {
	name   string          // the interface's tc direction: "ingress" (from the pod) or "egress" (to it)
	tcx    ebpf.AttachType // tcx attach point
	parent uint32          // clsact parent (netlink.HANDLE_MIN_INGRESS/EGRESS)
	prog   string          // program name
}

func hooks() []hook {
	return []hook{
		{"ingress", ebpf.AttachTCXIngress, handleMinIngress, policyProgPolicyFromPod},
		{"egress", ebpf.AttachTCXEgress, handleMinEgress, policyProgPolicyToPod},
	}
}

// uplinkHook is host routing's side on the node's uplinks (SetUplinks):
// packets from other nodes to the node's pods.
func uplinkHook() hook {
	return hook{"uplink", ebpf.AttachTCXIngress, handleMinIngress, policyProgPolicyFromUplink}
}

// allHooks are the hooks of every link pin.
func allHooks() []hook { return append(hooks(), uplinkHook()) }

func (d *Datapath) program(h hook) *ebpf.Program {
	switch h.prog {
	case policyProgPolicyFromPod:
		return d.progs.PolicyFromPod
	case policyProgPolicyFromUplink:
		return d.progs.PolicyFromUplink
	}
	return d.progs.PolicyToPod
}

// Link pins: PinDir/links/policy_<ingress|egress|uplink>_<ifindex>. bpffs refuses
// names with a dot, so temporary pins get a suffix instead.
const (
	linkPinPrefix = "policy_"
	nextPinSuffix = "_next"
)

func linkDir(pinDir string) string { return filepath.Join(pinDir, "links") }

func linkPin(pinDir string, ifindex int, h hook) string {
	return filepath.Join(linkDir(pinDir), linkPinPrefix+h.name+"_"+strconv.Itoa(ifindex))
}

type pinnedLink struct {
	path    string
	hook    hook
	ifindex int
}

// linkPins lists the policy link pins in pinDir (temporary ones included).
func linkPins(pinDir string) ([]pinnedLink, error) {
	entries, err := os.ReadDir(linkDir(pinDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("list link pins: %w", err)
	}
	var out []pinnedLink
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), linkPinPrefix)
		if !ok {
			continue
		}
		rest = strings.TrimSuffix(rest, nextPinSuffix)
		for _, h := range allHooks() {
			idx, ok := strings.CutPrefix(rest, h.name+"_")
			if !ok {
				continue
			}
			if n, err := strconv.Atoi(idx); err == nil && n > 0 {
				out = append(out, pinnedLink{path: filepath.Join(linkDir(pinDir), e.Name()), hook: h, ifindex: n})
			}
		}
	}
	return out, nil
}

// Attach enforces policy on the host-side interface ifindex (in the calling
// thread's network namespace), both directions. Attaching again is a no-op,
// or swaps in this Load's programs atomically. The tcx links are pinned, so
// enforcement outlives the agent process. Attach the interface before
// traffic may flow: until then nothing is checked.
func (d *Datapath) Attach(ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("attach policy: ifindex %d: %w", ifindex, ErrInvalid)
	}
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	var had map[string]bool
	if d.legacy {
		var err error
		if had, err = legacyHooks(ifindex); err != nil {
			return fmt.Errorf("attach policy to ifindex %d: %w", ifindex, err)
		}
	}
	var created []hook
	for _, h := range hooks() {
		var (
			c   bool
			err error
		)
		if d.legacy {
			err = attachLegacy(ifindex, h, d.program(h))
			c = !had[h.name]
		} else {
			c, err = d.attachTCX(ifindex, h)
		}
		if err != nil {
			// A half-attached interface would police one direction: undo
			// what this call added.
			for _, h := range created {
				if d.legacy {
					_ = deleteLegacyFilter(ifindex, h)
				} else {
					_ = detachPinned(linkPin(d.pinDir, ifindex, h))
					_ = os.Remove(linkPin(d.pinDir, ifindex, h))
				}
			}
			return fmt.Errorf("attach policy to ifindex %d: %w", ifindex, err)
		}
		if c {
			created = append(created, h)
		}
	}
	d.log.Info("attached policy programs", "ifindex", ifindex, "tcx", !d.legacy)
	return nil
}

// attachTCX makes sure the hook's program runs on ifindex through a link
// pinned at its pin. It reports whether it created the link.
func (d *Datapath) attachTCX(ifindex int, h hook) (bool, error) {
	pin := linkPin(d.pinDir, ifindex, h)
	prog := d.program(h)
	if err := os.MkdirAll(linkDir(d.pinDir), 0o700); err != nil {
		return false, err
	}
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case errors.Is(err, os.ErrNotExist):
		l, err := attachNewTCX(ifindex, h, prog)
		if err != nil {
			return false, err
		}
		defer l.Close()
		if err := l.Pin(pin); err != nil {
			return false, fmt.Errorf("pin %s link: %w", h.name, err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("load pinned %s link %s: %w", h.name, pin, err)
	}
	defer old.Close()
	if live, err := d.updateLink(old, h, ifindex); err != nil || live {
		return false, err
	}

	// The pinned link is defunct (its interface is gone, and the index was
	// given to a new one): attach anew, then swap the pin.
	l, err := attachNewTCX(ifindex, h, prog)
	if err != nil {
		return false, err
	}
	defer l.Close()
	tmp := pin + nextPinSuffix
	if err := l.Pin(tmp); err != nil {
		return false, fmt.Errorf("pin %s link: %w", h.name, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		_ = l.Unpin()
		return false, fmt.Errorf("replace pinned %s link: %w", h.name, err)
	}
	return false, nil
}

// updateLink gives a pinned link on ifindex at h this Load's program; it
// reports false when the link is defunct or elsewhere.
func (d *Datapath) updateLink(l link.Link, h hook, ifindex int) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("inspect pinned %s link: %w", h.name, err)
	}
	tcx := info.TCX()
	if tcx == nil || int(tcx.Ifindex) != ifindex || ebpf.AttachType(tcx.AttachType) != h.tcx {
		return false, nil
	}
	prog := d.program(h)
	if id, ok := d.ids[prog]; ok && info.Program == id {
		return true, nil
	}
	if err := l.Update(prog); err != nil {
		return false, fmt.Errorf("replace program of pinned %s link: %w", h.name, err)
	}
	return true, nil
}

func attachNewTCX(ifindex int, h hook, prog *ebpf.Program) (link.Link, error) {
	// First in the chain: no program before it can pass packets around
	// policy; allowed packets go on to later programs (TCX_NEXT). On an
	// uplink, last: what others' programs there (a firewall) pass is all
	// host routing takes.
	anchor := link.Head()
	if h.name == uplinkHook().name {
		anchor = link.Tail()
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: h.tcx, Anchor: anchor})
	if err != nil {
		return nil, fmt.Errorf("attach tcx %s: %w", h.name, err)
	}
	return l, nil
}

// restore gives every attached interface this Load's programs, and drops
// the pins of links whose interface is gone.
func (d *Datapath) restore(ctx context.Context) error {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	if d.legacy {
		n, err := replaceLegacyFilters(d.program)
		if n > 0 {
			d.log.Info("replaced policy programs of clsact filters", "filters", n)
		}
		return err
	}
	pins, err := linkPins(d.pinDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range pins {
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasSuffix(p.path, nextPinSuffix) {
			// Left by an Attach that did not finish.
			_ = detachPinned(p.path)
			_ = os.Remove(p.path)
			continue
		}
		if p.hook.name == uplinkHook().name && !d.hostRouting {
			// Host routing turned off: the uplinks go back to the stack.
			if err := detachPinned(p.path); err != nil {
				errs = append(errs, err)
			} else if err := os.Remove(p.path); err != nil {
				errs = append(errs, err)
			} else {
				d.log.Info("detached host routing from uplink (host routing off)", "ifindex", p.ifindex)
			}
			continue
		}
		l, err := link.LoadPinnedLink(p.path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", p.path, err))
			continue
		}
		live, err := d.updateLink(l, p.hook, p.ifindex)
		l.Close()
		switch {
		case err != nil:
			errs = append(errs, err)
		case live:
			d.log.Info("replaced policy program in place", "ifindex", p.ifindex, "hook", p.hook.name)
		default:
			d.log.Info("dropping link of a removed interface", "pin", p.path)
			if err := os.Remove(p.path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Detach stops enforcing policy on ifindex; a detached or missing interface
// is fine.
func (d *Datapath) Detach(ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("detach policy: ifindex %d: %w", ifindex, ErrInvalid)
	}
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	var errs []error
	if d.legacy {
		errs = append(errs, removeLegacyFilters(ifindex))
	}
	for _, h := range hooks() {
		pin := linkPin(d.pinDir, ifindex, h)
		errs = append(errs, detachPinned(pin))
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach policy from ifindex %d: %w", ifindex, err)
	}
	return nil
}

// SetUplinks makes ifindexes (the node's uplinks: the interfaces holding
// its addresses) exactly the interfaces where packets from other nodes to
// the node's pods take host routing (Options.HostRouting): it attaches
// policy_from_uplink at tcx ingress, pinned like the pod interfaces' links
// (Load swaps in new programs, Cleanup removes them), and detaches it from
// every other interface. With host routing off, or without tcx (Linux
// 6.6+), it only detaches; then it returns ErrNotSupported for a non-empty
// list.
func (d *Datapath) SetUplinks(ifindexes []int) error {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	want := map[int]bool{}
	for _, i := range ifindexes {
		if i <= 0 {
			return fmt.Errorf("set uplinks: ifindex %d: %w", i, ErrInvalid)
		}
		want[i] = true
	}
	var errs []error
	if !d.hostRouting || d.legacy {
		clear(want)
		if len(ifindexes) > 0 {
			errs = append(errs, fmt.Errorf("set uplinks: host routing from uplinks needs Options.HostRouting and tcx: %w", ErrNotSupported))
		}
	}
	pins, err := linkPins(d.pinDir)
	if err != nil {
		return fmt.Errorf("set uplinks: %w", err)
	}
	for _, p := range pins {
		if p.hook.name != uplinkHook().name || (want[p.ifindex] && !strings.HasSuffix(p.path, nextPinSuffix)) {
			continue
		}
		if err := detachPinned(p.path); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		d.log.Info("detached host routing from uplink", "ifindex", p.ifindex)
	}
	for _, i := range slices.Sorted(maps.Keys(want)) {
		created, err := d.attachTCX(i, uplinkHook())
		if err != nil {
			errs = append(errs, fmt.Errorf("attach host routing to uplink ifindex %d: %w", i, err))
		} else if created {
			d.log.Info("attached host routing to uplink", "ifindex", i)
		}
	}
	return errors.Join(errs...)
}

// Uplinks returns the interfaces SetUplinks attached, sorted.
func (d *Datapath) Uplinks() ([]int, error) {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	pins, err := linkPins(d.pinDir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range pins {
		if p.hook.name == uplinkHook().name && !strings.HasSuffix(p.path, nextPinSuffix) {
			out = append(out, p.ifindex)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Attached returns the interfaces with policy programs in at least one
// direction, sorted (for the agent to detach those it no longer knows).
// With clsact filters it looks in the calling thread's network namespace.
func (d *Datapath) Attached() ([]int, error) {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	if d.legacy {
		return legacyAttached()
	}
	pins, err := linkPins(d.pinDir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range pins {
		if p.hook.name == uplinkHook().name {
			continue
		}
		l, err := link.LoadPinnedLink(p.path, nil)
		if err != nil {
			return nil, fmt.Errorf("load pinned link %s: %w", p.path, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("inspect pinned link %s: %w", p.path, err)
		}
		if tcx := info.TCX(); tcx != nil && tcx.Ifindex != 0 {
			out = append(out, int(tcx.Ifindex))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// detachPinned detaches the link pinned at pin now, rather than when the
// kernel frees it. A missing pin is fine.
func detachPinned(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	defer l.Close()
	if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
		return fmt.Errorf("detach %s: %w", pin, err)
	}
	return nil
}

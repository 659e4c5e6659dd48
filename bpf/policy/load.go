package policy

import (
	"github.com/membrane-mesh/membrane/bpf/internal/pin"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
)

// Default map sizes and conntrack lifetimes.
const (
	DefaultMaxIPCache = 512000
	// DefaultMaxEndpoints bounds the endpoint map (one entry per local pod).
	DefaultMaxEndpoints = 65536
	// DefaultMaxPolicy bounds the policy map: entries of all endpoints, a
	// port range counting as its port blocks. Not preallocated.
	DefaultMaxPolicy = 1 << 20
	// DefaultMaxConntrack is the conntrack LRU (preallocated, ~100 bytes
	// an entry).
	DefaultMaxConntrack = 262144
	DefaultMaxFragments = 8192
	// DefaultEventsBufferSize is the flow events ring buffer (bytes, a power
	// of two; an event takes 64).
	DefaultEventsBufferSize = 1 << 20

	DefaultCTTimeoutSYN   = time.Minute
	DefaultCTTimeoutTCP   = 6 * time.Hour
	DefaultCTTimeoutClose = 10 * time.Second
	DefaultCTTimeoutOther = time.Minute
)

// Options configure Load.
type Options struct {
	// PinDir is a directory on bpffs (e.g. /sys/fs/bpf/membrane/<node>)
	// holding the maps and, below links/, the tcx links. Created if
	// missing. It may be shared with other datapath packages (socklb):
	// names do not collide.
	PinDir string

	// Map sizes; zero means the default. Changing the size of a map that
	// is already pinned makes Load fail: Unload first (dropping entries).
	MaxIPCache       uint32
	MaxEndpoints     uint32
	MaxPolicy        uint32
	MaxConntrack     uint32
	MaxFragments     uint32
	EventsBufferSize uint32

	// Trace selects the forwarded packets that emit flow events (drops
	// always do): TraceNew (default), TraceAll or TraceNone.
	Trace TraceMode

	// Conntrack lifetimes of idle flows (whole seconds, rounded up); zero
	// means the default: TCP before the peer answered (SYN), TCP
	// established, TCP after RST or FIN both ways (Close), and UDP, ICMP
	// and other protocols.
	CTTimeoutSYN   time.Duration
	CTTimeoutTCP   time.Duration
	CTTimeoutClose time.Duration
	CTTimeoutOther time.Duration

	// HostRouting delivers packets from a pod to another pod of the node
	// straight into the destination's netns after both policies
	// (bpf_redirect_peer, Linux 5.10), skipping the node's stack; the
	// agent's local routes (UpsertLocalRoute) name the destinations.
	// With it, SetUplinks does the same for packets from other nodes.
	// HaveHostRouting probes the kernel.
	HostRouting bool

	// forceLegacyTC attaches with clsact filters even where tcx exists (tests).
	forceLegacyTC bool
}

func (o Options) withDefaults() Options {
	for _, f := range []struct {
		v   *uint32
		def uint32
	}{
		{&o.MaxIPCache, DefaultMaxIPCache},
		{&o.MaxEndpoints, DefaultMaxEndpoints},
		{&o.MaxPolicy, DefaultMaxPolicy},
		{&o.MaxConntrack, DefaultMaxConntrack},
		{&o.MaxFragments, DefaultMaxFragments},
		{&o.EventsBufferSize, DefaultEventsBufferSize},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.CTTimeoutSYN, DefaultCTTimeoutSYN},
		{&o.CTTimeoutTCP, DefaultCTTimeoutTCP},
		{&o.CTTimeoutClose, DefaultCTTimeoutClose},
		{&o.CTTimeoutOther, DefaultCTTimeoutOther},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.PinDir == "":
		return errors.New("PinDir is required")
	case bits.OnesCount32(o.EventsBufferSize) != 1 || o.EventsBufferSize < uint32(os.Getpagesize()):
		return fmt.Errorf("EventsBufferSize %d: want a power of two of at least a page", o.EventsBufferSize)
	case o.Trace >= traceModes:
		return fmt.Errorf("unknown trace mode %d", o.Trace)
	}
	for _, d := range []time.Duration{o.CTTimeoutSYN, o.CTTimeoutTCP, o.CTTimeoutClose, o.CTTimeoutOther} {
		if d < 0 || d > math.MaxUint32*time.Second {
			return fmt.Errorf("conntrack timeout %s out of range", d)
		}
	}
	return nil
}

// Datapath is the loaded policy datapath: its maps, and the programs that
// Attach puts on host-side interfaces.
type Datapath struct {
	*Maps
	progs policyPrograms
	// tailCalls is policy_from_pod's program array (host routing): the
	// kernel empties it when its last file descriptor closes, so the
	// Datapath holds one (programs in the pinned links fall back to the
	// node's stack once it is gone).
	tailCalls *ebpf.Map
	ids       map[*ebpf.Program]ebpf.ProgramID
	pinDir    string
	log       *slog.Logger
	legacy    bool // clsact filters instead of tcx links
	// hostRouting is Options.HostRouting: SetUplinks attaches only then.
	hostRouting bool

	attachMu sync.Mutex
}

// Load loads the programs, reusing the maps pinned in opts.PinDir (so an
// agent restart keeps identities, policy, conntrack and counters) and
// creating and pinning missing ones. Interfaces that were attached keep
// their attachment: Load swaps the new programs into their pinned tcx links
// atomically (with clsact, replaces the filters), so enforcement never stops.
//
// Interfaces are those of the network namespace of the calling thread (the
// node's); tcx links are pinned in opts.PinDir/links.
func Load(ctx context.Context, log *slog.Logger, opts Options) (*Datapath, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}
	log = log.With("pin_dir", opts.PinDir)

	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("load policy datapath: lift memlock limit (kernel < 5.11): %w", err)
	}
	if err := pin.EnsureDir(opts.PinDir); err != nil {
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}
	spec, err := newSpec(opts)
	if err != nil {
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}
	legacy := opts.forceLegacyTC
	if !legacy {
		tcx, err := haveTCX()
		if err != nil {
			return nil, fmt.Errorf("load policy datapath: %w", err)
		}
		if !tcx {
			log.Warn("kernel lacks tcx (Linux 6.6+): attaching with clsact filters, which cannot be pinned")
			legacy = true
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}

	// Programs and maps only: the constants are baked in, and leaving the
	// variables out keeps the unused BTF export and .rodata descriptors closed.
	var objs struct {
		policyPrograms
		policyMaps
	}
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinDir},
	})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load policy datapath: pinned maps in %s do not match this build or these Options (Unload to start over, losing entries): %w", opts.PinDir, err)
	} else if err != nil {
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}
	maps, err := newMaps(&objs.policyMaps)
	if err != nil {
		_ = objs.policyPrograms.Close()
		_ = objs.policyMaps.Close()
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}
	maps.writer = true
	dp := &Datapath{
		Maps:      maps,
		progs:     objs.policyPrograms,
		tailCalls: objs.MembraneHrProgs,
		ids:       map[*ebpf.Program]ebpf.ProgramID{},
		pinDir:    opts.PinDir,
		log:       log,
		legacy:    legacy,

		hostRouting: opts.HostRouting,
	}
	for _, p := range []*ebpf.Program{dp.progs.PolicyFromPod, dp.progs.PolicyToPod, dp.progs.PolicyFromUplink} {
		info, err := p.Info()
		if err == nil {
			id, ok := info.ID()
			if ok {
				dp.ids[p] = id
			}
		}
	}
	if err := dp.restore(ctx); err != nil {
		_ = dp.Close()
		return nil, fmt.Errorf("load policy datapath: %w", err)
	}
	return dp, nil
}

// newSpec is the collection with map sizes and constants from opts.
func newSpec(opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := loadPolicy()
	if err != nil {
		return nil, err
	}
	var specs policySpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, fmt.Errorf("inspect embedded object: %w", err)
	}
	specs.MembraneIpc4.MaxEntries = opts.MaxIPCache
	specs.MembraneEps.MaxEntries = opts.MaxEndpoints
	specs.MembraneLroute4.MaxEntries = opts.MaxEndpoints
	specs.MembranePolicy.MaxEntries = opts.MaxPolicy
	specs.MembraneCt4.MaxEntries = opts.MaxConntrack
	specs.MembraneFrag4.MaxEntries = opts.MaxFragments
	specs.MembraneEvents.MaxEntries = opts.EventsBufferSize

	if err := specs.EmitTraces.Set(uint8(opts.Trace)); err != nil {
		return nil, fmt.Errorf("set emit_traces: %w", err)
	}
	if err := specs.HostRouting.Set(opts.HostRouting); err != nil {
		return nil, fmt.Errorf("set host_routing: %w", err)
	}
	if !opts.HostRouting {
		// Never tail-called then; kernels before Linux 5.10 lack
		// bpf_redirect_peer and would refuse the program.
		specs.PolicyHostRouted.Instructions = asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}
		specs.PolicyFromUplink.Instructions = asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}
	}
	if err := specs.EventsWakeupBytes.Set(opts.EventsBufferSize / 8); err != nil {
		return nil, fmt.Errorf("set events_wakeup_bytes: %w", err)
	}
	for _, c := range []struct {
		v *ebpf.VariableSpec
		d time.Duration
	}{
		{specs.CtLifetimeSyn, opts.CTTimeoutSYN},
		{specs.CtLifetimeTcp, opts.CTTimeoutTCP},
		{specs.CtLifetimeClose, opts.CTTimeoutClose},
		{specs.CtLifetimeOther, opts.CTTimeoutOther},
	} {
		secs := uint32((c.d + time.Second - 1) / time.Second)
		if err := c.v.Set(secs); err != nil {
			return nil, fmt.Errorf("set %s: %w", c.v.Name, err)
		}
	}
	return spec, nil
}

// Close releases the file descriptors of programs and maps. Pinned maps and
// links stay, so enforcement keeps running unchanged.
func (d *Datapath) Close() error {
	var errs []error
	errs = append(errs, d.progs.Close())
	if d.tailCalls != nil {
		errs = append(errs, d.tailCalls.Close())
	}
	if d.Maps != nil {
		errs = append(errs, d.Maps.Close())
	}
	return errors.Join(errs...)
}

// OpenPinned opens the pinned maps in pinDir without loading or attaching
// anything (for tools such as `membrane bpf policy list`).
func OpenPinned(pinDir string) (*Maps, error) {
	spec, err := loadPolicy()
	if err != nil {
		return nil, fmt.Errorf("open pinned policy maps: %w", err)
	}
	opened := map[string]*ebpf.Map{}
	closeAll := func() {
		for _, m := range opened {
			m.Close()
		}
	}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if err == nil && (m.Type() != ms.Type || m.KeySize() != ms.KeySize || m.ValueSize() != ms.ValueSize) {
			m.Close()
			err = fmt.Errorf("layout differs from this build: %w", ebpf.ErrMapIncompatible)
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open pinned policy map %s: %w", name, err)
		}
		opened[name] = m
	}
	maps, err := newMaps(&policyMaps{
		MembraneCt4:     opened[policyMapMembraneCt4],
		MembraneEps:     opened[policyMapMembraneEps],
		MembraneLroute4: opened[policyMapMembraneLroute4],
		MembraneEvents:  opened[policyMapMembraneEvents],
		MembraneFrag4:   opened[policyMapMembraneFrag4],
		MembraneIpc4:    opened[policyMapMembraneIpc4],
		MembranePolcnt:  opened[policyMapMembranePolcnt],
		MembranePolicy:  opened[policyMapMembranePolicy],
		MembranePolmet:  opened[policyMapMembranePolmet],
	})
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open pinned policy maps: %w", err)
	}
	return maps, nil
}

// Unload detaches the policy programs from every interface and removes the
// pins of the policy datapath from pinDir: its links and its maps (dropping
// every entry). pinDir itself is removed when nothing else is left in it; a
// missing pinDir is fine. clsact filters are looked for in the network
// namespace of the calling thread. A Datapath still open on pinDir stops
// working: Close it.
func Unload(pinDir string) error {
	return Cleanup(slog.New(slog.DiscardHandler), pinDir)
}

// Cleanup is Unload logging one line per link or clsact filter it removes
// and per pin or directory it removes, for removing Membrane from a node.
// Only what this package makes is touched: pins by their names, clsact
// filters by their handle, priority and program name. Running it again is a
// no-op.
func Cleanup(log *slog.Logger, pinDir string) error {
	var errs []error
	// clsact filters are not pinned: look for them even without pinDir.
	err := eachLegacyFilter(-1, func(l netlink.Link, h hook) error {
		if err := deleteLegacyFilter(l.Attrs().Index, h); err != nil {
			return err
		}
		log.Info("removed policy clsact filter", "interface", l.Attrs().Name, "hook", h.name)
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return wrapUnload(errs)
	}
	if err := pin.Check(pinDir); err != nil {
		return fmt.Errorf("unload policy datapath: %w", err)
	}
	spec, err := loadPolicy()
	if err != nil {
		return fmt.Errorf("unload policy datapath: %w", err)
	}
	remove := func(path, what string) {
		err := os.Remove(path)
		switch {
		case err == nil:
			log.Info("removed "+what, "pin", path)
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, err)
		}
	}
	// Detach before the maps go: dropping a pin detaches only once the
	// kernel frees the link, which a process holding it open delays.
	pins, err := linkPins(pinDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range pins {
		if _, err := os.Lstat(p.path); err == nil {
			if err := detachPinned(p.path); err != nil {
				errs = append(errs, err)
			} else {
				log.Info("detached policy program", "ifindex", p.ifindex, "hook", p.hook.name, "pin", p.path)
			}
		}
		remove(p.path, "policy link pin")
	}
	if removed, err := pin.RemoveEmpty(linkDir(pinDir)); err != nil {
		errs = append(errs, err)
	} else if removed {
		log.Info("removed pin directory", "dir", linkDir(pinDir))
	}
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			remove(filepath.Join(pinDir, name), "policy map pin")
		}
	}
	if removed, err := pin.RemoveEmpty(pinDir); err != nil {
		errs = append(errs, err)
	} else if removed {
		log.Info("removed pin directory", "dir", pinDir)
	}
	return wrapUnload(errs)
}

func wrapUnload(errs []error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unload policy datapath: %w", err)
	}
	return nil
}

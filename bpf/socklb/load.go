package socklb

import (
	"github.com/membrane-mesh/membrane/bpf/internal/pin"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Default map sizes.
const (
	// DefaultMaxServices is the services map size: one entry per frontend
	// plus one per backend slot (10,000 services with 2 backends use 30,000).
	DefaultMaxServices = 262144
	DefaultMaxBackends = 65536
	// DefaultMaxSockets is the LRU of (socket, backend) -> frontend entries
	// that reverse-translate UDP replies and getpeername.
	DefaultMaxSockets = 262144
	// DefaultMaxAffinity is the LRU of (client netns, service) -> backend.
	DefaultMaxAffinity = 65536

	// maxRevNAT covers every 16-bit rev-NAT ID.
	maxRevNAT = 65536
)

// Options configure Load.
type Options struct {
	// PinDir is a directory on bpffs (e.g. /sys/fs/bpf/membrane/<cluster>/<node>)
	// holding the maps and, below links/, the cgroup links. Created if missing.
	PinDir string
	// CgroupPath is the cgroup v2 directory the programs attach to (the
	// cgroup2 root for a node).
	CgroupPath string

	// Map sizes; zero means the default. Changing a size of maps that are
	// already pinned makes Load fail: Unload first (which drops all entries).
	MaxServices uint32
	MaxBackends uint32
	MaxSockets  uint32
	MaxAffinity uint32

	// DisableAffinity ignores FlagAffinity of services.
	DisableAffinity bool

	// forceNoSetRetval loads the programs as for a kernel without
	// bpf_set_retval (tests).
	forceNoSetRetval bool
}

func (o Options) withDefaults() Options {
	for _, f := range []struct {
		v   *uint32
		def uint32
	}{
		{&o.MaxServices, DefaultMaxServices},
		{&o.MaxBackends, DefaultMaxBackends},
		{&o.MaxSockets, DefaultMaxSockets},
		{&o.MaxAffinity, DefaultMaxAffinity},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return o
}

// Datapath is the loaded, attached socket load balancer and its maps.
type Datapath struct {
	*Maps
	progs socklbPrograms
	links []attachment
}

// Load loads the programs, reusing the maps pinned in opts.PinDir (an agent
// restart keeps every translation) and creating and pinning missing ones, and
// attaches the programs to opts.CgroupPath. Where links are already pinned
// it replaces their programs atomically, so the datapath is never detached
// while the agent restarts.
func Load(ctx context.Context, log *slog.Logger, opts Options) (*Datapath, error) {
	if opts.PinDir == "" || opts.CgroupPath == "" {
		return nil, errors.New("load socket LB: PinDir and CgroupPath are required")
	}
	opts = opts.withDefaults()
	log = log.With("pin_dir", opts.PinDir)

	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("load socket LB: lift memlock limit (kernel < 5.11): %w", err)
	}
	if err := pin.EnsureDir(opts.PinDir); err != nil {
		return nil, fmt.Errorf("load socket LB: %w", err)
	}
	cg, err := openCgroup(opts.CgroupPath)
	if err != nil {
		return nil, fmt.Errorf("load socket LB: %w", err)
	}
	defer cg.fd.Close()

	spec, err := newSpec(log, opts)
	if err != nil {
		return nil, fmt.Errorf("load socket LB: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load socket LB: %w", err)
	}

	// Programs and maps only: the constants are baked in, and leaving the
	// variables out lets LoadAndAssign close the .rodata map's descriptor.
	var objs struct {
		socklbPrograms
		socklbMaps
	}
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinDir},
	})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load socket LB: pinned maps in %s do not match this build or these Options (Unload to start over, losing entries): %w", opts.PinDir, err)
	} else if err != nil {
		return nil, fmt.Errorf("load socket LB: %w", err)
	}
	dp := &Datapath{Maps: newMaps(&objs.socklbMaps), progs: objs.socklbPrograms}

	if err := os.MkdirAll(linkDir(opts.PinDir), 0o700); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load socket LB: %w", err)
	}
	progs := map[string]*ebpf.Program{
		socklbProgLb4Connect:     objs.Lb4Connect,
		socklbProgLb4Sendmsg:     objs.Lb4Sendmsg,
		socklbProgLb4Recvmsg:     objs.Lb4Recvmsg,
		socklbProgLb4Getpeername: objs.Lb4Getpeername,
	}
	for _, h := range hooks() {
		if err := ctx.Err(); err != nil {
			dp.undo(log)
			return nil, fmt.Errorf("load socket LB: %w", err)
		}
		a, err := attach(log, cg, h, progs[h.prog], filepath.Join(linkDir(opts.PinDir), h.prog))
		if err != nil {
			dp.undo(log)
			return nil, fmt.Errorf("load socket LB: %w", err)
		}
		dp.links = append(dp.links, a)
	}
	return dp, nil
}

// newSpec is the collection with map sizes and constants from opts.
func newSpec(log *slog.Logger, opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := loadSocklb()
	if err != nil {
		return nil, err
	}
	var specs socklbSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, fmt.Errorf("inspect embedded object: %w", err)
	}
	specs.MembraneSvc4.MaxEntries = opts.MaxServices
	specs.MembraneAffm4.MaxEntries = opts.MaxServices
	specs.MembraneBe4.MaxEntries = opts.MaxBackends
	specs.MembraneRnat4.MaxEntries = maxRevNAT
	specs.MembraneRsk4.MaxEntries = opts.MaxSockets
	specs.MembraneAff4.MaxEntries = opts.MaxAffinity

	setRetval := false
	if !opts.forceNoSetRetval {
		if setRetval, err = haveSetRetval(); err != nil {
			return nil, err
		}
	}
	if !setRetval {
		log.Warn("kernel lacks bpf_set_retval for connect4/sendmsg4 (Linux 5.18+): services without backends refuse with EPERM instead of ECONNREFUSED")
	}
	if err := specs.HaveSetRetval.Set(boolU8(setRetval)); err != nil {
		return nil, fmt.Errorf("set have_set_retval: %w", err)
	}
	if err := specs.EnableAffinity.Set(boolU8(!opts.DisableAffinity)); err != nil {
		return nil, fmt.Errorf("set enable_affinity: %w", err)
	}
	return spec, nil
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// undo reverts a failed Load: links it created are unpinned (detaching
// them); links that existed keep running, with whatever program they have.
func (d *Datapath) undo(log *slog.Logger) {
	for _, a := range d.links {
		if a.created {
			if err := os.Remove(a.pin); err != nil {
				log.Error("remove link pin after failed load", "pin", a.pin, "error", err)
			}
		}
	}
	if err := d.Close(); err != nil {
		log.Error("close after failed load", "error", err)
	}
}

// Close releases the file descriptors of programs, links and maps. The
// pinned maps and links stay, so the datapath keeps running unchanged.
func (d *Datapath) Close() error {
	var errs []error
	for _, a := range d.links {
		errs = append(errs, a.link.Close())
	}
	d.links = nil
	errs = append(errs, d.progs.Close())
	if d.Maps != nil {
		errs = append(errs, d.Maps.Close())
	}
	return errors.Join(errs...)
}

// OpenPinned opens the pinned maps in pinDir without loading or attaching
// anything (for tools such as `membrane bpf lb list`).
func OpenPinned(pinDir string) (*Maps, error) {
	spec, err := loadSocklb()
	if err != nil {
		return nil, fmt.Errorf("open pinned socket LB maps: %w", err)
	}
	var maps socklbMaps
	opened := map[string]*ebpf.Map{}
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
			for _, m := range opened {
				m.Close()
			}
			return nil, fmt.Errorf("open pinned socket LB map %s: %w", name, err)
		}
		opened[name] = m
	}
	maps = socklbMaps{
		MembraneAff4:   opened[socklbMapMembraneAff4],
		MembraneAffm4:  opened[socklbMapMembraneAffm4],
		MembraneBe4:    opened[socklbMapMembraneBe4],
		MembraneLbstat: opened[socklbMapMembraneLbstat],
		MembraneRnat4:  opened[socklbMapMembraneRnat4],
		MembraneRsk4:   opened[socklbMapMembraneRsk4],
		MembraneSvc4:   opened[socklbMapMembraneSvc4],
	}
	return newMaps(&maps), nil
}

// Unload detaches the programs and removes the pins of the socket load
// balancer from pinDir: its links and its maps (dropping every entry). pinDir
// itself is removed when nothing else is left in it. A missing pinDir is fine.
// A Datapath still open on pinDir stops working: Close it.
func Unload(pinDir string) error {
	return Cleanup(slog.New(slog.DiscardHandler), pinDir)
}

// Cleanup is Unload logging one line per link it detaches and per pin or
// directory it removes, for removing Membrane from a node. Only the pins
// this package makes (by name) are touched; running it again is a no-op.
func Cleanup(log *slog.Logger, pinDir string) error {
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := pin.Check(pinDir); err != nil {
		return fmt.Errorf("unload socket LB: %w", err)
	}
	spec, err := loadSocklb()
	if err != nil {
		return fmt.Errorf("unload socket LB: %w", err)
	}
	var errs []error
	remove := func(path, what string) {
		err := os.Remove(path)
		switch {
		case err == nil:
			log.Info("removed "+what, "pin", path)
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, err)
		}
	}
	// Links first: detach before the maps go. Dropping a pin would detach
	// only once the kernel frees the link (asynchronously, and never while
	// some process holds it open), so detach explicitly.
	for _, h := range hooks() {
		for _, pin := range []string{filepath.Join(linkDir(pinDir), h.prog), filepath.Join(linkDir(pinDir), h.prog) + nextPinSuffix} {
			if detached, err := detachPinned(pin); err != nil {
				errs = append(errs, err)
			} else if detached {
				log.Info("detached socket LB program", "hook", h.section, "pin", pin)
			}
			remove(pin, "socket LB link pin")
		}
	}
	if removed, err := pin.RemoveEmpty(linkDir(pinDir)); err != nil {
		errs = append(errs, err)
	} else if removed {
		log.Info("removed pin directory", "dir", linkDir(pinDir))
	}
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			remove(filepath.Join(pinDir, name), "socket LB map pin")
		}
	}
	if removed, err := pin.RemoveEmpty(pinDir); err != nil {
		errs = append(errs, err)
	} else if removed {
		log.Info("removed pin directory", "dir", pinDir)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unload socket LB: %w", err)
	}
	return nil
}

// detachPinned detaches the link pinned at pin; detached says there was one.
func detachPinned(pin string) (detached bool, err error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	defer l.Close()
	if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
		return false, fmt.Errorf("detach %s: %w", pin, err)
	}
	return true, nil
}

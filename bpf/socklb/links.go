package socklb

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// hook is one cgroup attach point and the program that goes there.
type hook struct {
	prog    string // program (and link pin) name
	section string // ELF section after "cgroup/"
	attach  ebpf.AttachType
	since   string // first Linux release with the hook
}

func hooks() []hook {
	return []hook{
		{socklbProgLb4Connect, "connect4", ebpf.AttachCGroupInet4Connect, "Linux 4.17"},
		{socklbProgLb4Sendmsg, "sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, "Linux 4.18"},
		{socklbProgLb4Recvmsg, "recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, "Linux 5.2"},
		{socklbProgLb4Getpeername, "getpeername4", ebpf.AttachCgroupInet4GetPeername, "Linux 5.8"},
	}
}

// nextPinSuffix names a link's pin while it replaces another (bpffs
// refuses names with a dot).
const nextPinSuffix = "_next"

// linkDir is where the cgroup links are pinned, below the pin directory.
func linkDir(pinDir string) string { return filepath.Join(pinDir, "links") }

// cgroup is the attach target: an open cgroup v2 directory and its ID.
type cgroup struct {
	path string
	fd   *os.File
	id   uint64
}

func openCgroup(path string) (*cgroup, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("statfs cgroup %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		f.Close()
		return nil, fmt.Errorf("%s is not a cgroup v2 directory", path)
	}
	var stat unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &stat); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	// On cgroup v2 the directory's inode number is the cgroup ID.
	return &cgroup{path: path, fd: f, id: stat.Ino}, nil
}

// attachment is a link this Load holds; created says the hook had no pinned
// link before, so undoing a failed Load removes it.
type attachment struct {
	link    link.Link
	pin     string
	created bool
}

// attach makes sure prog runs at h on cg through a link pinned at pin. An
// existing pinned link on the same cgroup gets its program replaced
// atomically (no moment without a program). A pinned link on another (or a
// removed) cgroup is replaced by a new link, renamed over the old pin.
func attach(log *slog.Logger, cg *cgroup, h hook, prog *ebpf.Program, pin string) (attachment, error) {
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case errors.Is(err, os.ErrNotExist):
		l, err := attachNew(cg, h, prog)
		if err != nil {
			return attachment{}, err
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return attachment{}, fmt.Errorf("pin %s link: %w", h.prog, err)
		}
		log.Info("attached socket LB program", "hook", h.section, "cgroup", cg.path, "pin", pin)
		return attachment{link: l, pin: pin, created: true}, nil
	case err != nil:
		return attachment{}, fmt.Errorf("load pinned %s link %s: %w", h.prog, pin, err)
	}

	info, err := old.Info()
	if err != nil {
		old.Close()
		return attachment{}, fmt.Errorf("inspect pinned %s link: %w", h.prog, err)
	}
	if ci := info.Cgroup(); ci != nil && ci.CgroupId == cg.id && ebpf.AttachType(ci.AttachType) == h.attach {
		if err := old.Update(prog); err != nil {
			old.Close()
			return attachment{}, fmt.Errorf("replace program of pinned %s link: %w", h.prog, err)
		}
		log.Info("replaced socket LB program in place", "hook", h.section, "cgroup", cg.path, "pin", pin)
		return attachment{link: old, pin: pin}, nil
	}

	// Attach the new link first, then swap the pin, then detach the old one.
	l, err := attachNew(cg, h, prog)
	if err != nil {
		old.Close()
		return attachment{}, err
	}
	tmp := pin + nextPinSuffix
	if err := l.Pin(tmp); err != nil {
		l.Close()
		old.Close()
		return attachment{}, fmt.Errorf("pin %s link: %w", h.prog, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		_ = l.Unpin()
		l.Close()
		old.Close()
		return attachment{}, fmt.Errorf("replace pinned %s link: %w", h.prog, err)
	}
	// Detach now rather than when the kernel gets round to freeing it.
	if err := old.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
		log.Warn("detach socket LB program from previous cgroup", "hook", h.section, "error", err)
	}
	old.Close()
	log.Info("moved socket LB program to another cgroup", "hook", h.section, "cgroup", cg.path, "pin", pin)
	return attachment{link: l, pin: pin}, nil
}

// attachNew attaches prog with a bpf_link (never the legacy, unpinnable
// PROG_ATTACH): programs of others on the cgroup are left alone.
func attachNew(cg *cgroup, h hook, prog *ebpf.Program) (link.Link, error) {
	l, err := link.AttachRawLink(link.RawLinkOptions{
		Target:  int(cg.fd.Fd()),
		Program: prog,
		Attach:  h.attach,
	})
	if err != nil {
		return nil, fmt.Errorf("attach %s to cgroup %s: %w", h.prog, cg.path, err)
	}
	return l, nil
}

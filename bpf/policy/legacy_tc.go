package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/nldump"
	"golang.org/x/sys/unix"
)

// Kernels without tcx (before 6.6) get clsact direct-action filters. They
// cannot be pinned but stay in the kernel when the agent exits; a fixed
// priority and handle let Load and Attach replace them in place (an atomic
// program swap) and Detach and Unload find them.
const (
	handleMinIngress = netlink.HANDLE_MIN_INGRESS
	handleMinEgress  = netlink.HANDLE_MIN_EGRESS
	legacyPriority   = 1
	legacyHandle     = 0x6d62 // "mb"
)

func legacyFilter(ifindex int, h hook, prog *ebpf.Program) *netlink.BpfFilter {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.parent,
			Handle:    legacyHandle,
			Priority:  legacyPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         h.prog,
		DirectAction: true,
	}
	if prog != nil {
		f.Fd = prog.FD()
	}
	return f
}

func isOurs(f netlink.Filter, h hook) bool {
	bf, ok := f.(*netlink.BpfFilter)
	a := f.Attrs()
	return ok && a.Handle == legacyHandle && a.Priority == legacyPriority && strings.HasPrefix(bf.Name, h.prog)
}

func ensureClsact(ifindex int) error {
	err := netlink.QdiscAdd(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return nil
}

func attachLegacy(ifindex int, h hook, prog *ebpf.Program) error {
	if err := ensureClsact(ifindex); err != nil {
		return err
	}
	if err := netlink.FilterReplace(legacyFilter(ifindex, h, prog)); err != nil {
		return fmt.Errorf("replace clsact %s filter: %w", h.name, err)
	}
	return nil
}

// eachLegacyFilter calls fn for every filter of ours on ifindex (every
// interface if ifindex < 0) in the calling thread's network namespace.
func eachLegacyFilter(ifindex int, fn func(link netlink.Link, h hook) error) error {
	var links []netlink.Link
	if ifindex > 0 {
		l, err := netlink.LinkByIndex(ifindex)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		} else if err != nil {
			return fmt.Errorf("find ifindex %d: %w", ifindex, err)
		}
		links = []netlink.Link{l}
	} else {
		var err error
		if links, err = nldump.Retry(netlink.LinkList); err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
	}
	var errs []error
	for _, l := range links {
		for _, h := range hooks() {
			filters, err := netlink.FilterList(l, h.parent)
			if err != nil {
				// No clsact qdisc: nothing of ours.
				continue
			}
			if slices.ContainsFunc(filters, func(f netlink.Filter) bool { return isOurs(f, h) }) {
				errs = append(errs, fn(l, h))
			}
		}
	}
	return errors.Join(errs...)
}

// replaceLegacyFilters points every filter of ours at this Load's programs.
func replaceLegacyFilters(prog func(hook) *ebpf.Program) (int, error) {
	n := 0
	err := eachLegacyFilter(-1, func(l netlink.Link, h hook) error {
		n++
		if err := netlink.FilterReplace(legacyFilter(l.Attrs().Index, h, prog(h))); err != nil {
			return fmt.Errorf("replace clsact %s filter on %s: %w", h.name, l.Attrs().Name, err)
		}
		return nil
	})
	return n, err
}

// removeLegacyFilters deletes our filters from ifindex (every interface if
// ifindex < 0).
func removeLegacyFilters(ifindex int) error {
	return eachLegacyFilter(ifindex, func(l netlink.Link, h hook) error {
		return deleteLegacyFilter(l.Attrs().Index, h)
	})
}

func deleteLegacyFilter(ifindex int, h hook) error {
	err := netlink.FilterDel(legacyFilter(ifindex, h, nil))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete clsact %s filter on ifindex %d: %w", h.name, ifindex, err)
	}
	return nil
}

// legacyHooks says which hooks of ifindex have our filter.
func legacyHooks(ifindex int) (map[string]bool, error) {
	had := map[string]bool{}
	err := eachLegacyFilter(ifindex, func(_ netlink.Link, h hook) error {
		had[h.name] = true
		return nil
	})
	return had, err
}

func legacyAttached() ([]int, error) {
	var out []int
	err := eachLegacyFilter(-1, func(l netlink.Link, _ hook) error {
		if i := l.Attrs().Index; len(out) == 0 || out[len(out)-1] != i {
			out = append(out, i)
		}
		return nil
	})
	return out, err
}

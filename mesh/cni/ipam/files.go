package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// files reads and writes the allocation files of one directory. Callers hold
// the directory lock.
type files struct {
	dir string
}

// list returns every allocation file in the directory, in address order.
// Files whose name is not an IPv4 address (the lock, last_reserved_ip) are not
// allocations. A file whose content cannot be parsed (a crash between create
// and write) still holds its address, with an empty owner, so that it is never
// handed out twice; garbage collection removes it.
func (s files) list() ([]Allocation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read data dir: %w", err)
	}
	var all []Allocation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !ip.Is4() || !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("read allocation %s: %w", ip, err)
		}
		all = append(all, Allocation{IP: ip, Owner: parseOwner(string(data))})
	}
	slices.SortFunc(all, func(a, b Allocation) int { return a.IP.Compare(b.IP) })
	return all, nil
}

func parseOwner(content string) Owner {
	id, ifName, ok := strings.Cut(content, "\n")
	if !ok {
		return Owner{}
	}
	return Owner{
		ContainerID: strings.TrimSpace(id),
		IfName:      strings.TrimSpace(ifName),
	}
}

// create writes the allocation file for ip. It returns false, without error,
// when the file already exists.
func (s files) create(ip netip.Addr, owner Owner) (bool, error) {
	path := filepath.Join(s.dir, ip.String())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("create allocation %s: %w", ip, err)
	}
	_, err = f.WriteString(owner.ContainerID + "\n" + owner.IfName)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return false, fmt.Errorf("write allocation %s: %w", ip, err)
	}
	return true, nil
}

func (s files) remove(ip netip.Addr) error {
	err := os.Remove(filepath.Join(s.dir, ip.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove allocation %s: %w", ip, err)
	}
	return nil
}

// lastReserved returns the address recorded by the last allocation, if any.
func (s files) lastReserved() (netip.Addr, bool) {
	data, err := os.ReadFile(filepath.Join(s.dir, lastReservedFileName))
	if err != nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil || !ip.Is4() {
		return netip.Addr{}, false
	}
	return ip, true
}

// setLastReserved records ip by writing a temporary file and renaming it over
// last_reserved_ip, then syncs the directory so the new allocation file and
// the record survive a crash.
func (s files) setLastReserved(ip netip.Addr) error {
	path := filepath.Join(s.dir, lastReservedFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(ip.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", lastReservedFileName, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", lastReservedFileName, err)
	}
	return s.syncDir()
}

func (s files) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("open data dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync data dir: %w", err)
	}
	return nil
}

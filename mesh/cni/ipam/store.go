package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Store is the on-disk record of who holds which address. Releasing and
// listing need no range, so DEL and GC work even when the configured PodCIDR
// changed or became invalid since ADD.
type Store struct {
	dir string
}

// NewStore returns the Store kept in dir. The directory is created on first
// write.
func NewStore(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("ipam: empty data dir")
	}
	return &Store{dir: dir}, nil
}

// Release frees every address held by owner and returns them. Releasing an
// owner that holds nothing is not an error.
func (s *Store) Release(ctx context.Context, owner Owner) ([]netip.Addr, error) {
	if err := owner.validate(); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	released, err := s.Prune(ctx, func(o Owner) bool { return o != owner })
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", owner.ContainerID, owner.IfName, err)
	}
	ips := make([]netip.Addr, 0, len(released))
	for _, al := range released {
		ips = append(ips, al.IP)
	}
	return ips, nil
}

// List returns every allocation on disk, in address order, including any
// left outside the current range by an earlier PodCIDR.
func (s *Store) List(ctx context.Context) ([]Allocation, error) {
	var all []Allocation
	err := s.locked(ctx, func(f files) error {
		var err error
		all, err = f.list()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	return all, nil
}

// Prune frees every allocation whose owner keep rejects (garbage collection)
// and returns what it freed.
func (s *Store) Prune(ctx context.Context, keep func(Owner) bool) ([]Allocation, error) {
	var freed []Allocation
	err := s.locked(ctx, func(f files) error {
		all, err := f.list()
		if err != nil {
			return err
		}
		for _, al := range all {
			if keep(al.Owner) {
				continue
			}
			if err := f.remove(al.IP); err != nil {
				return err
			}
			freed = append(freed, al)
		}
		if len(freed) == 0 {
			return nil
		}
		return f.syncDir()
	})
	if err != nil {
		return nil, fmt.Errorf("prune allocations: %w", err)
	}
	return freed, nil
}

// locked runs fn while holding the directory lock.
func (s *Store) locked(ctx context.Context, fn func(files) error) (err error) {
	l, err := lockDir(ctx, s.dir)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := l.unlock(); err == nil {
			err = uerr
		}
	}()
	return fn(files{dir: s.dir})
}

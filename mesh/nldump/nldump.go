// Package nldump retries netlink dumps the kernel interrupted: a dump
// (links, addresses, routes, neighbours) that the table changed under
// returns netlink.ErrDumpInterrupted with a possibly incomplete result.
// Nodes create and remove pod interfaces all the time, so every dump whose
// result matters goes through Retry.
package nldump

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// attempts bounds the retries: a table that changes under five dumps in a
// row makes the caller's error.
const attempts = 5

// Retry calls dump until it is not interrupted, at most attempts times.
func Retry[T any](dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range attempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

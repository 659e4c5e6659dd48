// Package clustermesh holds the rules of Membrane's cluster mesh that need
// no Kubernetes client: cluster names and ids, the global-service
// annotations, and the credentials a cluster keeps of its remotes.
package clustermesh

import (
	"fmt"
	"net/netip"
	"regexp"
)

// MaxNameLength is the longest cluster name (Cilium's limit).
const MaxNameLength = 32

// MinID and MaxID bound the id of a cluster that joins a mesh; 0 means
// "not in a mesh".
const (
	MinID = 1
	MaxID = 255
)

var namePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidateName checks a cluster name: 1 to 32 lowercase letters, digits
// and dashes, starting and ending with a letter or digit.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLength || !namePattern.MatchString(name) {
		return fmt.Errorf("cluster name %q: must be 1 to %d lowercase letters, digits and dashes, starting and ending with a letter or digit", name, MaxNameLength)
	}
	return nil
}

// ValidateID checks the id of a cluster that joins a mesh.
func ValidateID(id int) error {
	if id < MinID || id > MaxID {
		return fmt.Errorf("cluster id %d: must be %d to %d to join a cluster mesh", id, MinID, MaxID)
	}
	return nil
}

// Overlap returns the first pair of prefixes of a and b that overlap.
func Overlap(a, b []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, x := range a {
		for _, y := range b {
			if x.Overlaps(y) {
				return x, y, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

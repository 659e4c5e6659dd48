package flow

import (
	"slices"
)

// MergeLast merges the answers of several nodes into one list ordered by
// time (ties keep the lists' order) and keeps the last n (n < 1: all) —
// what `observe --last N` across nodes shows.
func MergeLast(lists [][]Flow, n int) []Flow {
	var all []Flow
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortStableFunc(all, func(a, b Flow) int { return a.Time.Compare(b.Time) })
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

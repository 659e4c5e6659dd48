package main

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckPair(t *testing.T) {
	side := func(name string, id int, cidrs ...string) *meshSide {
		s := &meshSide{name: name, id: id}
		for _, c := range cidrs {
			s.cidrs = append(s.cidrs, netip.MustParsePrefix(c))
		}
		return s
	}
	if err := checkPair(side("east", 1, "10.1.0.0/24", "10.1.1.0/24"), side("west", 2, "10.2.0.0/24")); err != nil {
		t.Errorf("disjoint clusters: %v", err)
	}
	for _, tc := range []struct {
		a, b *meshSide
		want string
	}{
		{side("east", 1, "10.1.0.0/24"), side("east", 2, "10.2.0.0/24"), `both clusters are named "east"`},
		{side("east", 1, "10.1.0.0/24"), side("west", 1, "10.2.0.0/24"), "both have id 1"},
		{side("east", 1, "10.1.0.0/24", "10.244.1.0/24"), side("west", 2, "10.244.0.0/16"), "pod CIDRs overlap: 10.244.1.0/24 of cluster east and 10.244.0.0/16 of cluster west"},
	} {
		if err := checkPair(tc.a, tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkPair(%s, %s) = %v, want %q", tc.a.name, tc.b.name, err, tc.want)
		}
	}
}

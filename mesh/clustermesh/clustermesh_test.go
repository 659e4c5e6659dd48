package clustermesh

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/model"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"east", "a", "west-2", strings.Repeat("a", 32)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "East", "-east", "east-", "east_1", strings.Repeat("a", 33)} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q): no error", bad)
		}
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []int{1, 2, 255} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("ValidateID(%d) = %v", ok, err)
		}
	}
	for _, bad := range []int{-1, 0, 256} {
		if err := ValidateID(bad); err == nil {
			t.Errorf("ValidateID(%d): no error", bad)
		}
	}
}

func TestOverlap(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	if _, _, ok := Overlap(p("10.1.0.0/24", "10.1.1.0/24"), p("10.2.0.0/24")); ok {
		t.Error("disjoint CIDRs overlap")
	}
	if a, b, ok := Overlap(p("10.1.0.0/24"), p("10.2.0.0/24", "10.1.0.0/16")); !ok || a.String() != "10.1.0.0/24" || b.String() != "10.1.0.0/16" {
		t.Errorf("Overlap = %v %v %v", a, b, ok)
	}
}

func TestAnnotations(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   map[string]string
		want model.Global
		err  string
	}{
		{"none", nil, model.Global{Shared: true, Affinity: model.AffinityNone}, ""},
		{"cilium", map[string]string{CiliumAnnotationGlobal: "true", CiliumAnnotationShared: "false", CiliumAnnotationAffinity: "local"},
			model.Global{Global: true, Affinity: model.AffinityLocal}, ""},
		{"membrane wins", map[string]string{CiliumAnnotationGlobal: "false", AnnotationGlobal: "true", CiliumAnnotationAffinity: "local", AnnotationAffinity: "remote"},
			model.Global{Global: true, Shared: true, Affinity: model.AffinityRemote}, ""},
		{"bad affinity", map[string]string{AnnotationGlobal: "true", CiliumAnnotationAffinity: "nearest"},
			model.Global{Global: true, Shared: true, Affinity: model.AffinityNone}, `annotation service.cilium.io/affinity: "nearest"`},
		{"bad global", map[string]string{AnnotationGlobal: "yes"},
			model.Global{Shared: true, Affinity: model.AffinityNone}, `annotation service.membrane.io/global: "yes"`},
		// Membrane's bad value wins over Cilium's good one: it is reported
		// and counts as absent, not as Cilium's.
		{"bad membrane over good cilium", map[string]string{AnnotationShared: "nope", CiliumAnnotationShared: "false"},
			model.Global{Shared: true, Affinity: model.AffinityNone}, `annotation service.membrane.io/shared: "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Annotations(tc.in)
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one with %q", err, tc.err)
			}
		})
	}
}

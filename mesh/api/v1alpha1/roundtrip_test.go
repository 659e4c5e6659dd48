package v1alpha1

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// policy is what both policy kinds offer the tests.
type policy interface {
	runtime.Object
	Validate() field.ErrorList
}

// decodePolicy decodes a manifest strictly (unknown fields are errors).
func decodePolicy(t *testing.T, raw []byte) policy {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.APIVersion != SchemeGroupVersion.String() {
		t.Fatalf("apiVersion %q, want %q", tm.APIVersion, SchemeGroupVersion)
	}
	var p policy
	switch tm.Kind {
	case "MembraneNetworkPolicy":
		p = &MembraneNetworkPolicy{}
	case "MembraneClusterwideNetworkPolicy":
		p = &MembraneClusterwideNetworkPolicy{}
	default:
		t.Fatalf("unexpected kind %q", tm.Kind)
	}
	if err := yaml.UnmarshalStrict(raw, p); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	return p
}

// TestCiliumExamples decodes examples from Cilium's documentation, changed
// only in apiVersion and kind, into the Go types with no unknown field; they
// validate, deep-copy equal, and encode back to the same spec.
func TestCiliumExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/cilium/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p := decodePolicy(t, raw)
			if errs := p.Validate(); len(errs) > 0 {
				t.Errorf("Validate: %v", errs.ToAggregate())
			}
			if cp := p.DeepCopyObject(); !reflect.DeepEqual(cp, p) {
				t.Errorf("DeepCopyObject differs: %s", cmp.Diff(p, cp))
			}

			out, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var want, got map[string]any
			if err := yaml.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"spec", "specs"} {
				if diff := cmp.Diff(want[k], got[k]); diff != "" {
					t.Errorf("%s changed in the round trip (-in +out):\n%s", k, diff)
				}
			}
		})
	}
}

// TestUnsupportedCiliumFields: Cilium fields Membrane lacks are unknown
// fields, so a strict decoder (and the API server, for kubectl's default
// strict validation) refuses them rather than dropping part of a policy.
func TestUnsupportedCiliumFields(t *testing.T) {
	for _, tc := range []struct{ name, spec, field string }{
		{"icmps", "ingress:\n  - icmps:\n    - fields:\n      - type: 8", "icmps"},
		{"toServices", "egress:\n  - toServices:\n    - k8sService:\n        serviceName: s", "toServices"},
		{"fromRequires", "ingress:\n  - fromRequires:\n    - matchLabels:\n        env: prod", "fromRequires"},
		{"enableDefaultDeny", "enableDefaultDeny:\n    ingress: false", "enableDefaultDeny"},
		{"nodeSelector", "nodeSelector:\n    matchLabels:\n      role: worker", "nodeSelector"},
		{"kafka", "ingress:\n  - toPorts:\n    - ports:\n      - port: \"9092\"\n      rules:\n        kafka:\n        - topic: t", "kafka"},
		{"deny L7", "ingressDeny:\n  - toPorts:\n    - ports:\n      - port: \"80\"\n      rules:\n        http:\n        - method: GET", "rules"},
		{"header secret", "ingress:\n  - toPorts:\n    - ports:\n      - port: \"80\"\n        protocol: TCP\n      rules:\n        http:\n        - headerMatches:\n          - name: X\n            secret:\n              name: s", "secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := "apiVersion: membrane.io/v1alpha1\nkind: MembraneNetworkPolicy\nmetadata:\n  name: x\nspec:\n  endpointSelector: {}\n  " + tc.spec + "\n"
			var p MembraneNetworkPolicy
			err := yaml.UnmarshalStrict([]byte(raw), &p)
			if err == nil || !strings.Contains(err.Error(), `unknown field "`) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want an unknown field error naming %q", err, tc.field)
			}
		})
	}
}

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{
		"MembraneNetworkPolicy", "MembraneNetworkPolicyList",
		"MembraneClusterwideNetworkPolicy", "MembraneClusterwideNetworkPolicyList",
		"MembraneIdentity", "MembraneIdentityList",
	} {
		if _, err := s.New(SchemeGroupVersion.WithKind(kind)); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	if got := Resource("membranenetworkpolicies").String(); got != "membranenetworkpolicies.membrane.io" {
		t.Errorf("Resource: %s", got)
	}
}

func TestIdentityDecode(t *testing.T) {
	raw := `apiVersion: membrane.io/v1alpha1
kind: MembraneIdentity
metadata:
  name: "12345"
securityLabels:
  k8s:app: web
  k8s:io.kubernetes.pod.namespace: shop
`
	var id MembraneIdentity
	if err := yaml.UnmarshalStrict([]byte(raw), &id); err != nil {
		t.Fatal(err)
	}
	if got := id.SecurityLabels[LabelSourceK8s+":"+PodNamespaceLabel]; got != "shop" {
		t.Errorf("namespace label %q", got)
	}
	if cp := id.DeepCopy(); !reflect.DeepEqual(cp, &id) {
		t.Errorf("DeepCopy differs")
	}
}

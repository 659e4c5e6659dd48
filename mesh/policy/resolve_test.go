package policy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/mesh/policy/convert"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenIdentity is a pod identity: its security labels are made as the
// agent makes them (identity.DefaultFilter().ForPod, with the namespace's
// kubernetes.io/metadata.name label).
type goldenIdentity struct {
	ID              identity.ID                   `json:"id"`
	Namespace       string                        `json:"namespace"`
	Labels          map[string]string             `json:"labels,omitempty"`
	NamespaceLabels map[string]string             `json:"namespaceLabels,omitempty"`
	ServiceAccount  string                        `json:"serviceAccount,omitempty"`
	NamedPorts      map[string][]policy.NamedPort `json:"namedPorts,omitempty"`
}

func (g goldenIdentity) identity() policy.Identity {
	ns := map[string]string{"kubernetes.io/metadata.name": g.Namespace}
	for k, v := range g.NamespaceLabels {
		ns[k] = v
	}
	return policy.Identity{
		ID:         g.ID,
		Labels:     identity.DefaultFilter().ForPod(g.Labels, g.Namespace, ns, g.ServiceAccount),
		NamedPorts: g.NamedPorts,
	}
}

type goldenTrace struct {
	From  identity.ID  `json:"from"`
	To    identity.ID  `json:"to"`
	Proto policy.Proto `json:"proto"`
	Port  uint16       `json:"port"`
}

// goldenInput is a case: the cluster's identities and policies, and the
// endpoint (one of the identities) whose policy is resolved.
type goldenInput struct {
	Config     policy.Config    `json:"config"`
	Identities []goldenIdentity `json:"identities"`
	Endpoint   struct {
		Identity   identity.ID                 `json:"identity"`
		NamedPorts map[string]policy.NamedPort `json:"namedPorts,omitempty"`
	} `json:"endpoint"`
	// Policies are MembraneNetworkPolicy, MembraneClusterwideNetworkPolicy
	// and NetworkPolicy objects.
	Policies []json.RawMessage `json:"policies"`
	// Traces are flows between identities to decide with Trace.
	Traces []goldenTrace `json:"traces,omitempty"`
	// Names are what the DNS proxy learned, FQDNSince when the selectors
	// appeared.
	Names     []policy.LearnedName `json:"names,omitempty"`
	FQDNSince map[string]time.Time `json:"fqdnSince,omitempty"`
}

type goldenOutput struct {
	PolicyErrors     []string      `json:"policyErrors,omitempty"`
	ResolverProblems []string      `json:"resolverProblems,omitempty"`
	Result           policy.Result `json:"result"`
	Problems         []string      `json:"problems,omitempty"`
	Traces           []string      `json:"traces,omitempty"`
}

func decodeStrict(raw []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

// convertPolicy converts one object by kind.
func convertPolicy(raw json.RawMessage) (policy.Policy, field.ErrorList, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return policy.Policy{}, nil, err
	}
	switch tm.Kind {
	case convert.KindMembraneNetworkPolicy:
		var p v1alpha1.MembraneNetworkPolicy
		if err := decodeStrict(raw, &p); err != nil {
			return policy.Policy{}, nil, err
		}
		out, errs := convert.FromMembranePolicy(&p)
		return out, errs, nil
	case convert.KindMembraneClusterwideNetworkPolicy:
		var p v1alpha1.MembraneClusterwideNetworkPolicy
		if err := decodeStrict(raw, &p); err != nil {
			return policy.Policy{}, nil, err
		}
		out, errs := convert.FromMembraneClusterwidePolicy(&p)
		return out, errs, nil
	case convert.KindNetworkPolicy:
		var p networkingv1.NetworkPolicy
		if err := decodeStrict(raw, &p); err != nil {
			return policy.Policy{}, nil, err
		}
		out, errs := convert.FromNetworkPolicy(&p)
		return out, errs, nil
	}
	return policy.Policy{}, nil, fmt.Errorf("unknown kind %q", tm.Kind)
}

func runGolden(t *testing.T, input goldenInput) goldenOutput {
	t.Helper()
	var out goldenOutput
	var policies []policy.Policy
	for i, raw := range input.Policies {
		p, errs, err := convertPolicy(raw)
		if err != nil {
			t.Fatalf("policies[%d]: %v", i, err)
		}
		for _, e := range errs {
			out.PolicyErrors = append(out.PolicyErrors, fmt.Sprintf("policies[%d]: %v", i, e))
		}
		if len(errs) == 0 {
			policies = append(policies, p)
		}
	}
	ids := policy.IdentitySet{Names: input.Names, FQDNSince: input.FQDNSince}
	endpoints := map[identity.ID]policy.Endpoint{}
	for _, g := range input.Identities {
		id := g.identity()
		ids.Identities = append(ids.Identities, id)
		ep := policy.Endpoint{Identity: id.ID, Labels: id.Labels, Namespace: g.Namespace, NamedPorts: map[string]policy.NamedPort{}}
		for name, nps := range g.NamedPorts {
			ep.NamedPorts[name] = nps[0]
		}
		endpoints[id.ID] = ep
	}
	ep, ok := endpoints[input.Endpoint.Identity]
	if !ok {
		t.Fatalf("endpoint identity %d is not among the identities", input.Endpoint.Identity)
	}
	if input.Endpoint.NamedPorts != nil {
		ep.NamedPorts = input.Endpoint.NamedPorts
	}
	r := policy.New(policies, ids, input.Config)
	for _, p := range r.Problems() {
		out.ResolverProblems = append(out.ResolverProblems, p.Error())
	}
	out.Result = r.Resolve(ep)
	for _, p := range out.Result.Problems {
		out.Problems = append(out.Problems, p.Error())
	}
	out.Result.Problems = nil
	for _, tr := range input.Traces {
		endpoint := func(id identity.ID) policy.Endpoint {
			if id == ep.Identity {
				return ep
			}
			if e, ok := endpoints[id]; ok {
				return e
			}
			return policy.Endpoint{Identity: id} // a reserved or CIDR identity
		}
		res := r.Trace(endpoint(tr.From), endpoint(tr.To), tr.Proto, tr.Port)
		out.Traces = append(out.Traces, fmt.Sprintf("%d -> %d %s/%d: %s", tr.From, tr.To, tr.Proto, tr.Port, res))
	}
	return out
}

// TestResolveGolden resolves testdata/<case>.in.yaml and compares the result
// with <case>.out.yaml (go test ./mesh/policy/... -update rewrites them).
func TestResolveGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var input goldenInput
			if err := yaml.UnmarshalStrict(raw, &input); err != nil {
				t.Fatalf("parse %s: %v", in, err)
			}
			got := runGolden(t, input)
			outPath := filepath.Join("testdata", name+".out.yaml")
			if *update {
				b, err := yaml.Marshal(got)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(outPath, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantRaw, err := os.ReadFile(outPath)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			var want goldenOutput
			if err := yaml.UnmarshalStrict(wantRaw, &want); err != nil {
				t.Fatalf("parse %s: %v", outPath, err)
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", name, diff)
			}
		})
	}
}

package translate

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/gateway/ir"
	"github.com/membrane-mesh/membrane/xds/xdstest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// built is a golden input's translation: every object's status and the
// Envoy resources.
type built struct {
	status Status
	out    Resources
}

// goldenCases reads and translates every testdata/*.in.yaml.
func goldenCases(t *testing.T) []xdstest.GoldenCase[Input, built] {
	return xdstest.GoldenCases(t, func(raw []byte) (Input, built, error) {
		in, err := ParseObjects(bytes.NewReader(raw))
		if err != nil {
			return in, built{}, fmt.Errorf("parse: %w", err)
		}
		model, status := Build(in)
		out, err := Render(model)
		return in, built{status, out}, err
	})
}

// TestGolden compares the translation of testdata/<case>.in.yaml with
// <case>.status.yaml (the status every object should get),
// <case>.listeners.json, <case>.routes.json, <case>.clusters.json and,
// where it has certificates, <case>.secrets.json (go test
// ./gateway/translate -update rewrites them).
func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			checkStatus(t, filepath.Join("testdata", c.Name+".status.yaml"), c.Out.status)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".listeners.json"), c.Out.out.Listeners, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".routes.json"), c.Out.out.Routes, *update)
			xdstest.CheckGolden(t, filepath.Join("testdata", c.Name+".clusters.json"), c.Out.out.Clusters, *update)
			// Only the cases with certificates have a secrets file.
			secrets := filepath.Join("testdata", c.Name+".secrets.json")
			if _, err := os.Stat(secrets); err == nil || len(c.Out.out.Secrets) > 0 {
				xdstest.CheckGolden(t, secrets, c.Out.out.Secrets, *update)
			}
		})
	}
}

func checkStatus(t *testing.T, path string, got Status) {
	t.Helper()
	b, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(b)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

// TestValid checks the output against the API's own constraints
// (protoc-gen-validate), inside the packed configs too, and that two
// translations give the same bytes (snapshot versions must not churn).
func TestValid(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			for _, l := range c.Out.out.Listeners {
				if err := l.ValidateAll(); err != nil {
					t.Errorf("listener %s: %v", l.GetName(), err)
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						xdstest.ValidateAny(t, f.GetTypedConfig())
					}
					if ts := fc.GetTransportSocket(); ts != nil {
						xdstest.ValidateAny(t, ts.GetTypedConfig())
					}
				}
			}
			for _, rc := range c.Out.out.Routes {
				if err := rc.ValidateAll(); err != nil {
					t.Errorf("route configuration %s: %v", rc.GetName(), err)
				}
			}
			for _, cl := range c.Out.out.Clusters {
				if err := cl.ValidateAll(); err != nil {
					t.Errorf("cluster %s: %v", cl.GetName(), err)
				}
			}
			model, _ := Build(c.In)
			again, err := Render(model)
			if err != nil {
				t.Fatal(err)
			}
			opts := proto.MarshalOptions{Deterministic: true}
			for i := range again.Listeners {
				a, _ := opts.Marshal(c.Out.out.Listeners[i])
				b, _ := opts.Marshal(again.Listeners[i])
				if !bytes.Equal(a, b) {
					t.Errorf("listener %d: two translations differ", i)
				}
			}
			for i := range again.Routes {
				a, _ := opts.Marshal(c.Out.out.Routes[i])
				b, _ := opts.Marshal(again.Routes[i])
				if !bytes.Equal(a, b) {
					t.Errorf("route configuration %d: two translations differ", i)
				}
			}
		})
	}
}

// TestClustersUsed: in every golden case, the IR's clusters are exactly
// those its listeners name; and a TLS backend's plain cluster goes when the
// only Gateway using it presents a client certificate (it uses its own
// variant).
func TestClustersUsed(t *testing.T) {
	check := func(t *testing.T, m ir.IR) {
		t.Helper()
		used := referencedClusters(m.Listeners)
		have := map[string]bool{}
		for _, c := range m.Clusters {
			have[c.Name] = true
			if !used[c.Name] {
				t.Errorf("cluster %s: no listener uses it", c.Name)
			}
		}
		for name := range used {
			if name != "" && !have[name] {
				t.Errorf("cluster %s: used but missing", name)
			}
		}
	}
	for _, c := range goldenCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			m, _ := Build(c.In)
			check(t, m)
		})
	}
	t.Run("only a presenting Gateway", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join("testdata", "backend-client-cert.in.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		in, err := ParseObjects(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		in.Gateways = slices.DeleteFunc(in.Gateways, func(g gwv1.Gateway) bool { return g.Name != "mtls" })
		m, _ := Build(in)
		check(t, m)
		var tls, variants int
		for _, c := range m.Clusters {
			if c.TLS != nil {
				tls++
				if strings.Contains(c.Name, "/client/") {
					variants++
				}
			}
		}
		if tls == 0 || variants != tls {
			t.Errorf("%d TLS clusters, %d of them presenting the client certificate: want all, and some", tls, variants)
		}
	})
}

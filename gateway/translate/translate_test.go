package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"sigs.k8s.io/yaml"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

var update = flag.Bool("update", false, "rewrite the golden files")

type goldenCase struct {
	name   string
	in     Input
	status Status
	out    Resources
}

// goldenCases reads and translates every testdata/*.in.yaml.
func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	var cases []goldenCase
	for _, path := range ins {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		in, err := ParseObjects(f)
		f.Close()
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		model, status := Build(in)
		out, err := Render(model)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cases = append(cases, goldenCase{strings.TrimSuffix(filepath.Base(path), ".in.yaml"), in, status, out})
	}
	return cases
}

// TestGolden compares the translation of testdata/<case>.in.yaml with
// <case>.status.yaml (the status every object should get),
// <case>.listeners.json and <case>.clusters.json (go test ./gateway/translate
// -update rewrites them).
func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			checkStatus(t, filepath.Join("testdata", c.name+".status.yaml"), c.status)
			checkGolden(t, filepath.Join("testdata", c.name+".listeners.json"), c.out.Listeners)
			checkGolden(t, filepath.Join("testdata", c.name+".clusters.json"), c.out.Clusters)
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

func checkGolden[M proto.Message](t *testing.T, path string, got []M) {
	t.Helper()
	if *update {
		b, err := marshalList(got)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	want, err := unmarshalList[M](raw)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

// marshalList writes ms as an indented JSON array of protojson messages
// (protojson's spacing is unstable: compacted, then re-indented).
func marshalList[M proto.Message](ms []M) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, m := range ms {
		b, err := protojson.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("marshal %T: %w", m, err)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := json.Compact(&buf, b); err != nil {
			return nil, err
		}
	}
	buf.WriteByte(']')
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func unmarshalList[M proto.Message](b []byte) ([]M, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return nil, err
	}
	var ms []M
	for i, r := range raws {
		var zero M
		m := zero.ProtoReflect().Type().New().Interface().(M)
		if err := protojson.Unmarshal(r, m); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// TestValid checks the output against the API's own constraints
// (protoc-gen-validate), inside the packed configs too, and that two
// translations give the same bytes (snapshot versions must not churn).
func TestValid(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			for _, l := range c.out.Listeners {
				if err := l.ValidateAll(); err != nil {
					t.Errorf("listener %s: %v", l.GetName(), err)
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						validateAny(t, f.GetTypedConfig())
					}
					if ts := fc.GetTransportSocket(); ts != nil {
						validateAny(t, ts.GetTypedConfig())
					}
				}
			}
			for _, cl := range c.out.Clusters {
				if err := cl.ValidateAll(); err != nil {
					t.Errorf("cluster %s: %v", cl.GetName(), err)
				}
			}
			model, _ := Build(c.in)
			again, err := Render(model)
			if err != nil {
				t.Fatal(err)
			}
			opts := proto.MarshalOptions{Deterministic: true}
			for i := range again.Listeners {
				a, _ := opts.Marshal(c.out.Listeners[i])
				b, _ := opts.Marshal(again.Listeners[i])
				if !bytes.Equal(a, b) {
					t.Errorf("listener %d: two translations differ", i)
				}
			}
		})
	}
}

func validateAny(t *testing.T, a *anypb.Any) {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatalf("unpack %s: %v", a.GetTypeUrl(), err)
	}
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		t.Fatalf("%T has no ValidateAll", m)
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%T: %v", m, err)
	}
	if h, ok := m.(*hcmv3.HttpConnectionManager); ok {
		for _, f := range h.GetHttpFilters() {
			validateAny(t, f.GetTypedConfig())
		}
	}
}

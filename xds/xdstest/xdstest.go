// Package xdstest holds the test helpers shared by the packages that
// translate into Envoy resources: golden files of protojson messages and
// deep validation of packed configs.
package xdstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

// CheckGolden compares got with the JSON list in the golden file at path,
// message by message (protocmp), so the comparison does not depend on
// protojson's spacing or field order. With update set it first rewrites
// the file from got (MarshalList).
func CheckGolden[M proto.Message](t testing.TB, path string, got []M, update bool) {
	t.Helper()
	if update {
		b, err := MarshalList(got)
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
	want, err := UnmarshalList[M](raw)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

// MarshalList writes ms as an indented JSON array of protojson messages,
// ending in a newline. protojson's spacing is deliberately unstable, so
// each message is compacted and the whole re-indented with encoding/json.
func MarshalList[M proto.Message](ms []M) ([]byte, error) {
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

// UnmarshalList parses a JSON array of protojson messages of type M; an
// error names the index of the message at fault.
func UnmarshalList[M proto.Message](b []byte) ([]M, error) {
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

// ValidateAny checks a packed config against the API's own constraints
// (protoc-gen-validate) and, for the HTTP connection manager, the HTTP
// filters and access logs packed inside it too (validation stops at an
// Any).
func ValidateAny(t testing.TB, a *anypb.Any) {
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
			ValidateAny(t, f.GetTypedConfig())
		}
		for _, l := range h.GetAccessLog() {
			ValidateAny(t, l.GetTypedConfig())
		}
	}
}

// GoldenCase is one golden input: testdata/<Name>.in.yaml, translated.
type GoldenCase[In, Out any] struct {
	Name string
	In   In
	Out  Out
}

// GoldenCases reads every testdata/*.in.yaml of the package under test and
// translates it with translate, failing the test on the first error; a
// package without inputs fails too.
func GoldenCases[In, Out any](t testing.TB, translate func(raw []byte) (In, Out, error)) []GoldenCase[In, Out] {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	var cases []GoldenCase[In, Out]
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		in, out, err := translate(raw)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cases = append(cases, GoldenCase[In, Out]{Name: strings.TrimSuffix(filepath.Base(path), ".in.yaml"), In: in, Out: out})
	}
	return cases
}

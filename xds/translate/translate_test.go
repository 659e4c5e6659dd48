package translate

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

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenCase is one testdata/<name>.in.yaml and its translation.
type goldenCase struct {
	name string
	in   Node
	out  Resources
}

// goldenCases reads and translates every testdata/*.in.yaml.
func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	var cases []goldenCase
	for _, in := range ins {
		raw, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var n Node
		if err := yaml.UnmarshalStrict(raw, &n); err != nil {
			t.Fatalf("parse %s: %v", in, err)
		}
		out, err := n.Resources()
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		cases = append(cases, goldenCase{strings.TrimSuffix(filepath.Base(in), ".in.yaml"), n, out})
	}
	return cases
}

// TestResourcesGolden compares the translation of testdata/<case>.in.yaml
// with <case>.listeners.json and <case>.clusters.json (go test
// ./xds/translate -update rewrites them).
func TestResourcesGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			checkGolden(t, filepath.Join("testdata", c.name+".listeners.json"), c.out.Listeners)
			checkGolden(t, filepath.Join("testdata", c.name+".clusters.json"), c.out.Clusters)
		})
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

// marshalList writes ms as an indented JSON array of protojson messages.
// protojson's spacing is deliberately unstable, so each message is
// compacted and the whole re-indented with encoding/json.
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

// TestResourcesValid checks the output against the API's own constraints
// (protoc-gen-validate), deeply, and that translating twice gives the
// same bytes (snapshot versions must not churn).
func TestResourcesValid(t *testing.T) {
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
				}
			}
			for _, cl := range c.out.Clusters {
				if err := cl.ValidateAll(); err != nil {
					t.Errorf("cluster %s: %v", cl.GetName(), err)
				}
			}
			again, err := c.in.Resources()
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

// validateAny validates a packed config and, for the HTTP connection
// manager, the configs packed inside it (validation stops at an Any).
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
		for _, l := range h.GetAccessLog() {
			validateAny(t, l.GetTypedConfig())
		}
	}
}

func TestResourcesErrors(t *testing.T) {
	ingress := func(rules ...Rule) Port {
		return Port{Direction: Ingress, Endpoint: netip.MustParseAddr("10.0.1.5"), Port: 80, Rules: rules}
	}
	okPort := ingress()
	for _, tc := range []struct {
		name string
		node Node
		want []string // substrings of the error
	}{
		{"proxy port 0", Node{Ports: []Port{okPort}}, []string{"proxyPort: must not be 0"}},
		{"port 0", Node{ProxyPort: 15001, Ports: []Port{okPort, {Direction: Egress, Endpoint: netip.MustParseAddr("10.0.1.5")}}},
			[]string{"ports[1].port: must not be 0"}},
		{"bad direction", Node{ProxyPort: 15001, Ports: []Port{{Direction: "inbound", Endpoint: netip.MustParseAddr("10.0.1.5"), Port: 80}}},
			[]string{`ports[0].direction: must be "ingress" or "egress", got "inbound"`}},
		{"missing endpoint", Node{ProxyPort: 15001, Ports: []Port{{Direction: Ingress, Port: 80}}},
			[]string{"ports[0].endpoint: missing or invalid address"}},
		{"ipv6 endpoint", Node{ProxyPort: 15001, Ports: []Port{{Direction: Ingress, Endpoint: netip.MustParseAddr("fd00::5"), Port: 80}}},
			[]string{"ports[0].endpoint: fd00::5: IPv6 is not supported yet"}},
		{"ipv6 peer", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{Peers: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/64")}})}},
			[]string{"ports[0].rules[0].peers[1]: fd00::: IPv6 is not supported yet"}},
		{"invalid peer", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{Peers: []netip.Prefix{{}}})}},
			[]string{"ports[0].rules[0].peers[0]: missing or invalid prefix"}},
		{"bad path regex", Node{ProxyPort: 15001, Ports: []Port{okPort, ingress(Rule{HTTP: []HTTPRule{{}, {}, {Path: "("}}})}},
			[]string{`ports[1].rules[0].http[2].path: invalid regex "(": `, "missing closing )"}},
		{"bad method and host regexes", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Method: "GET|*", Host: `a\`}}})}},
			[]string{`ports[0].rules[0].http[0].method: invalid regex "GET|*"`, `ports[0].rules[0].http[0].host: invalid regex "a\\"`}},
		{"perl-only regex", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Path: `/(?=x)`}}})}},
			[]string{`ports[0].rules[0].http[0].path: invalid regex "/(?=x)"`}},
		{"bad header name", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{}, Rule{HTTP: []HTTPRule{{Headers: []Header{{Name: "X-Ok"}, {Name: "Content Type"}}}}})}},
			[]string{`ports[0].rules[1].http[0].headers[1].name: invalid header name "Content Type"`}},
		{"pseudo-header", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Headers: []Header{{Name: ":path", Value: "/"}}}}})}},
			[]string{`ports[0].rules[0].http[0].headers[0].name: invalid header name ":path"`}},
		{"empty header name", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Headers: []Header{{Value: "x"}}}}})}},
			[]string{`ports[0].rules[0].http[0].headers[0].name: invalid header name ""`}},
		{"bad header value", Node{ProxyPort: 15001, Ports: []Port{ingress(Rule{HTTP: []HTTPRule{{Headers: []Header{{Name: "X-A", Value: "a\r\nb"}}}}})}},
			[]string{`ports[0].rules[0].http[0].headers[0].value: invalid header value`}},
		{"every problem reported", Node{Ports: []Port{{Direction: Ingress, Endpoint: netip.MustParseAddr("10.0.1.5")}}},
			[]string{"proxyPort: must not be 0", "ports[0].port: must not be 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.node.Resources()
			if err == nil {
				t.Fatalf("got no error, resources %v", res)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if len(res.Listeners) != 0 || len(res.Clusters) != 0 {
				t.Errorf("got resources with an error: %v", res)
			}
		})
	}
}

func TestLiteral(t *testing.T) {
	for _, tc := range []struct {
		re   string
		want string
		ok   bool
	}{
		{"GET", "GET", true},
		{"/api/v1/items", "/api/v1/items", true},
		{`api\.example\.com`, "api.example.com", true},
		{`/a\+b`, "/a+b", true},
		{"(?i)get", "", false},
		{"GET|POST", "", false},
		{"/items/.*", "", false},
		{"x{3}", "", false},
		{"(GET)", "", false},
		{"^GET$", "", false},
	} {
		got, ok := literal(tc.re)
		if got != tc.want || ok != tc.ok {
			t.Errorf("literal(%q) = %q, %v; want %q, %v", tc.re, got, ok, tc.want, tc.ok)
		}
	}
}

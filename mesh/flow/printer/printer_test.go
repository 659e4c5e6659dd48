package printer

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/mesh/flow"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// outputs are the golden outputs of every case: <case>.<name>.out.
var outputs = []struct {
	name string
	opts Options
}{
	{"compact", Options{Format: Compact}},
	{"compact-node", Options{Format: Compact, NodeName: true}},
	{"table", Options{Format: Table}},
	{"table-node", Options{Format: Table, NodeName: true}},
	{"json", Options{Format: JSON}},
}

// TestGolden prints testdata/<case>.in.yaml (a list of flows) in every
// format and compares with <case>.<format>.out (go test ./mesh/flow/printer
// -update rewrites them).
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		raw, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var flows []flow.Flow
		if err := yaml.UnmarshalStrict(raw, &flows); err != nil {
			t.Fatalf("parse %s: %v", in, err)
		}
		for _, o := range outputs {
			t.Run(name+"/"+o.name, func(t *testing.T) {
				var b bytes.Buffer
				p := New(&b, o.opts)
				for _, f := range flows {
					if err := p.Write(f); err != nil {
						t.Fatal(err)
					}
				}
				if err := p.Flush(); err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", name+"."+o.name+".out")
				if *update {
					if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (go test -update writes it)", err)
				}
				if got := b.String(); got != string(want) {
					t.Errorf("%s differs:\n--- want\n%s--- got\n%s", golden, want, got)
				}
			})
		}
	}
}

// TestCompactLine pins the line format itself, Hubble's:
// TIME[ [NODE]]: SRC (ID) -> DST (ID) TYPE VERDICT (SUMMARY).
func TestCompactLine(t *testing.T) {
	var b bytes.Buffer
	raw := `{"time":"2025-11-21T16:40:01.123Z","type":"drop","verdict":"DROPPED",
		"dropReason":{"code":133,"name":"POLICY_DENIED","description":"Policy denied"},
		"ip":{"source":"10.244.1.7","destination":"10.244.2.9"},
		"l4":{"protocol":"TCP","sourcePort":43210,"destinationPort":8080,"tcpFlags":["SYN"]},
		"source":{"identity":1234,"namespace":"default","podName":"frontend-7c9d"},
		"destination":{"identity":5678,"namespace":"default","podName":"backend-5f7c"}}`
	var f flow.Flow
	if err := yaml.Unmarshal([]byte(raw), &f); err != nil {
		t.Fatal(err)
	}
	if err := New(&b, Options{Format: Compact}).Write(f); err != nil {
		t.Fatal(err)
	}
	want := "Nov 21 16:40:01.123: default/frontend-7c9d:43210 (ID:1234) -> default/backend-5f7c:8080 (ID:5678) Policy denied DROPPED (TCP Flags: SYN)\n"
	if b.String() != want {
		t.Errorf("compact line\n got %q\nwant %q", b.String(), want)
	}
}

// httpFlows are completed HTTP requests as the agent makes them from the
// proxy's access log: one forwarded, one the L7 policy denied.
func httpFlows() (forwarded, denied flow.Flow) {
	client, server := netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("10.244.2.9")
	enrich := flow.MapEnricher{
		client: {Identity: 1234, Namespace: "payments", PodName: "checkout-7d9f-x"},
		server: {Identity: 5678, Namespace: "payments", PodName: "payment-5c4-y"},
	}
	l := flow.HTTPLog{
		Time:   time.Date(2025, 11, 21, 10, 0, 0, 0, time.UTC),
		Source: netip.AddrPortFrom(client, 51234), Destination: netip.AddrPortFrom(server, 8080),
		Direction: flow.Ingress, Protocol: "HTTP/1.1", Method: "GET", Host: "payment:8080",
		Path: "/api/v1/payments/P123", Code: 200, Duration: 23400 * time.Microsecond,
	}
	forwarded = flow.FromHTTPLog(l, "node-1", enrich)
	l.Time = l.Time.Add(time.Second)
	l.Method, l.Path, l.Code, l.Duration, l.Denied = "DELETE", "/api/v1/payments/123", 403, 300*time.Microsecond, true
	denied = flow.FromHTTPLog(l, "node-1", enrich)
	return forwarded, denied
}

func TestCompactHTTP(t *testing.T) {
	forwarded, denied := httpFlows()
	for _, tc := range []struct {
		f    flow.Flow
		want string
	}{
		{forwarded, "Nov 21 10:00:00.023: payments/checkout-7d9f-x:51234 (ID:1234) -> payments/payment-5c4-y:8080 (ID:5678) " +
			"http-response FORWARDED (HTTP/1.1 200 23ms (GET http://payment:8080/api/v1/payments/P123))\n"},
		{denied, "Nov 21 10:00:01.000: payments/checkout-7d9f-x:51234 (ID:1234) -> payments/payment-5c4-y:8080 (ID:5678) " +
			"L7 policy denied DROPPED (HTTP/1.1 403 0ms (DELETE http://payment:8080/api/v1/payments/123))\n"},
		{tunneled(denied), "Nov 21 10:00:01.000: payments/checkout-7d9f-x:51234 (ID:1234) -> payments/payment-5c4-y:8080 (ID:5678) " +
			"L7 policy denied DROPPED (mTLS spiffe://td/ns/payments/sa/checkout -> spiffe://td/ns/payments/sa/payment HTTP/1.1 403 0ms (DELETE http://payment:8080/api/v1/payments/123))\n"},
		{connect(forwarded), "Nov 21 10:00:00.023: payments/checkout-7d9f-x:51234 (ID:1234) -> payments/payment-5c4-y:8080 (ID:5678) " +
			"http-response FORWARDED (mTLS spiffe://td/ns/payments/sa/checkout -> spiffe://td/ns/payments/sa/payment 200 23ms)\n"},
	} {
		var b bytes.Buffer
		if err := New(&b, Options{Format: Compact}).Write(tc.f); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("compact line\n got %q\nwant %q", b.String(), tc.want)
		}
	}
}

// tunneled is f as a request inside an authenticated tunnel.
func tunneled(f flow.Flow) flow.Flow {
	f.Auth = &flow.Auth{SourceID: "spiffe://td/ns/payments/sa/checkout", DestinationID: "spiffe://td/ns/payments/sa/payment"}
	return f
}

// connect is f as an authenticated tunnel's CONNECT.
func connect(f flow.Flow) flow.Flow {
	f = tunneled(f)
	h := *f.L7.HTTP
	h.Method = "CONNECT"
	l7 := *f.L7
	l7.HTTP = &h
	f.L7 = &l7
	return f
}

// TestJSONHTTP: -o json carries the HTTP fields, the latency and the L7
// drop reason, and reads back into the same flow.
func TestJSONHTTP(t *testing.T) {
	forwarded, denied := httpFlows()
	var b bytes.Buffer
	p := New(&b, Options{Format: JSON})
	for _, f := range []flow.Flow{forwarded, denied} {
		if err := p.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	for _, want := range []string{
		`"l7":{"type":"response","latencyNs":23400000,"http":{"protocol":"HTTP/1.1","method":"GET","host":"payment:8080","path":"/api/v1/payments/P123","code":200}}`,
		`"dropReason":{"code":133,"name":"POLICY_DENIED","description":"L7 policy denied"}`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b.String())
		}
	}
	for i, want := range []flow.Flow{forwarded, denied} {
		var got flow.Flow
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("JSON round trip (-want +got):\n%s", diff)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range Formats {
		if got, err := ParseFormat(string(f)); err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %q, %v", f, got, err)
		}
	}
	if _, err := ParseFormat("yaml"); err == nil || !strings.Contains(err.Error(), `"yaml": want one of compact, json, table`) {
		t.Errorf("ParseFormat(yaml) = %v", err)
	}
}

func TestICMPv4Names(t *testing.T) {
	for _, tc := range []struct {
		typ, code uint8
		want      string
	}{
		{8, 0, "EchoRequest"}, {0, 0, "EchoReply"}, {3, 3, "DestinationUnreachable(Port)"},
		{11, 0, "TimeExceeded(TTLExceeded)"}, {3, 99, "DestinationUnreachable(Code: 99)"},
		{8, 1, "EchoRequest(Code: 1)"}, {42, 1, "42(1)"},
	} {
		if got := icmpv4(tc.typ, tc.code); got != tc.want {
			t.Errorf("icmpv4(%d, %d) = %q, want %q", tc.typ, tc.code, got, tc.want)
		}
	}
}

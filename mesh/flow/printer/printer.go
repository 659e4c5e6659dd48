// Package printer writes flows for people and tools the way `hubble observe`
// does: compact lines, a table, or one JSON object per line.
package printer

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Format is an output format.
type Format string

// Output formats.
const (
	// Compact is Hubble's compact line:
	//	Nov 21 16:40:01.123: default/frontend-7c9d:43210 (ID:1234) -> default/backend-5f7c:8080 (ID:5678) Policy denied DROPPED (TCP Flags: SYN)
	//	Nov 21 16:41:02.023: default/frontend-7c9d:43302 (ID:1234) -> shop/web-0:80 (ID:4321) http-response FORWARDED (HTTP/1.1 200 23ms (GET http://web.shop/api/v1/payments/P123))
	//	Nov 21 16:41:03.000: default/frontend-7c9d:43303 (ID:1234) -> shop/web-0:80 (ID:4321) L7 policy denied DROPPED (HTTP/1.1 403 0ms (DELETE http://web.shop/api/v1/payments/123))
	Compact Format = "compact"
	// Table is Hubble's table: TIMESTAMP [NODE] SOURCE DESTINATION TYPE VERDICT SUMMARY.
	Table Format = "table"
	// JSON is one flow.Flow per line.
	JSON Format = "json"
)

// Formats lists the output formats.
var Formats = []Format{Compact, JSON, Table}

// ParseFormat checks an output format's name.
func ParseFormat(s string) (Format, error) {
	if !slices.Contains(Formats, Format(s)) {
		return "", fmt.Errorf("%q: want one of %s", s, join(Formats))
	}
	return Format(s), nil
}

// TimeLayout is Hubble's timestamp layout; times print in UTC, as Hubble's.
const TimeLayout = time.StampMilli

// Options shape the output.
type Options struct {
	Format Format
	// NodeName adds the observing node: " [node]" after the compact
	// timestamp, a NODE column in the table.
	NodeName bool
}

// Printer writes flows to w. It is not safe for concurrent use.
type Printer struct {
	w     io.Writer
	opts  Options
	tw    *tabwriter.Writer
	enc   *json.Encoder
	lines int
}

// New returns a printer; call Flush when done (and, following, after each
// flow: the table buffers to align its columns).
func New(w io.Writer, opts Options) *Printer {
	p := &Printer{w: w, opts: opts}
	switch opts.Format {
	case Table:
		p.tw = tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)
	case JSON:
		p.enc = json.NewEncoder(w)
	}
	return p
}

// Write prints one flow.
func (p *Printer) Write(f flow.Flow) error {
	var err error
	switch p.opts.Format {
	case JSON:
		err = p.enc.Encode(f)
	case Table:
		err = p.table(f)
	default:
		err = p.compact(f)
	}
	if err != nil {
		return fmt.Errorf("write flow: %w", err)
	}
	p.lines++
	return nil
}

// Flush writes what the table holds back.
func (p *Printer) Flush() error {
	if p.tw == nil {
		return nil
	}
	if err := p.tw.Flush(); err != nil {
		return fmt.Errorf("write flows: %w", err)
	}
	return nil
}

func (p *Printer) compact(f flow.Flow) error {
	var node string
	if p.opts.NodeName {
		node = " [" + f.Node + "]"
	}
	src, dst := Hosts(f)
	srcID, dstID := identityString(f.Source.Identity), identityString(f.Destination.Identity)
	arrow := "->"
	if f.IsReply {
		// Hubble shows a reply on its connection's line, arrow reversed.
		src, dst, srcID, dstID, arrow = dst, src, dstID, srcID, "<-"
	}
	_, err := fmt.Fprintf(p.w, "%s%s: %s %s %s %s %s %s %s (%s)\n",
		timestamp(f.Time), node, src, srcID, arrow, dst, dstID, Type(f), f.Verdict, Summary(f))
	return err
}

func (p *Printer) table(f flow.Flow) error {
	if p.lines == 0 {
		head := "TIMESTAMP\t"
		if p.opts.NodeName {
			head += "NODE\t"
		}
		if _, err := fmt.Fprint(p.tw, head+"SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n"); err != nil {
			return err
		}
	}
	row := timestamp(f.Time) + "\t"
	if p.opts.NodeName {
		row += f.Node + "\t"
	}
	src, dst := Hosts(f)
	_, err := fmt.Fprint(p.tw, row+src+"\t"+dst+"\t"+Type(f)+"\t"+string(f.Verdict)+"\t"+Summary(f)+"\n")
	return err
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return t.UTC().Format(TimeLayout)
}

// Hosts returns the source and destination as Hubble names them:
// namespace/pod, or the IP address, with ":port" when there is one.
func Hosts(f flow.Flow) (src, dst string) {
	return host(f.IP.Source, f.L4.SourcePort, f.Source), host(f.IP.Destination, f.L4.DestinationPort, f.Destination)
}

func host(ip netip.Addr, port uint16, ep flow.Endpoint) string {
	var h string
	switch {
	case ep.PodName != "" && ep.Namespace != "" && ep.Cluster != "":
		h = ep.Cluster + "/" + ep.Namespace + "/" + ep.PodName // a remote cluster's pod
	case ep.PodName != "" && ep.Namespace != "":
		h = ep.Namespace + "/" + ep.PodName
	case ep.PodName != "":
		h = ep.PodName
	case ip.IsValid():
		h = ip.String()
	}
	if port == 0 {
		return h
	}
	return net.JoinHostPort(h, strconv.Itoa(int(port)))
}

// identityString is Hubble's: "(ID:1234)", or a reserved identity's name
// ("(world)", "(host)", ...).
func identityString(id uint32) string {
	if name := identity.Reserved(identity.ID(id)); name != "" {
		return "(" + name + ")"
	}
	return "(ID:" + strconv.FormatUint(uint64(id), 10) + ")"
}

// Type is Hubble's TYPE column: the drop reason of drops ("Policy
// denied", "L7 policy denied" for an HTTP request the L7 policy refused),
// the observation point of traces ("to-endpoint"), "http-request" or
// "http-response" for other L7 flows.
func Type(f flow.Flow) string {
	switch {
	case f.DropReason != nil:
		return f.DropReason.Description
	case f.L7 != nil:
		proto := "l7"
		if f.L7.HTTP != nil {
			proto = "http"
		}
		if f.L7.DNS != nil {
			proto = "dns"
		}
		return proto + "-" + string(f.L7.Type)
	case f.TracePoint != "":
		return f.TracePoint
	}
	return string(f.Type)
}

// Summary is Hubble's SUMMARY: "TCP Flags: SYN, ACK", "UDP", "ICMPv4
// EchoRequest", or an HTTP request line ("HTTP/1.1 GET http://host/path",
// "HTTP/1.1 200 12ms (GET http://host/path)").
func Summary(f flow.Flow) string {
	if f.L7 != nil && f.L7.DNS != nil {
		return dnsSummary(f.L7.DNS)
	}
	if f.L7 != nil && f.L7.HTTP != nil {
		h := f.L7.HTTP
		req := h.Method + " http://" + h.Host + h.Path
		if f.Auth != nil {
			s := fmt.Sprintf("mTLS %s -> %s %d %dms", f.Auth.SourceID, f.Auth.DestinationID, h.Code, f.L7.Latency.Milliseconds())
			if h.Method != "CONNECT" {
				// A request inside the tunnel, policed by L7 rules.
				s = fmt.Sprintf("mTLS %s -> %s %s %d %dms (%s)", f.Auth.SourceID, f.Auth.DestinationID, h.Protocol, h.Code, f.L7.Latency.Milliseconds(), req)
			}
			return s
		}
		if f.L7.Type == flow.L7Response {
			return fmt.Sprintf("%s %d %dms (%s)", h.Protocol, h.Code, f.L7.Latency.Milliseconds(), req)
		}
		return h.Protocol + " " + req
	}
	switch f.L4.Protocol {
	case flow.TCP:
		if f.L4.TCPFlags == 0 {
			return "TCP"
		}
		return "TCP Flags: " + f.L4.TCPFlags.String()
	case flow.ICMPv4:
		return "ICMPv4 " + icmpv4(f.L4.ICMPType, f.L4.ICMPCode)
	case flow.ICMPv6:
		return fmt.Sprintf("ICMPv6 %d(%d)", f.L4.ICMPType, f.L4.ICMPCode)
	}
	return string(f.L4.Protocol)
}

type icmpType struct {
	name  string
	codes []string // by code; nil: the type has no codes
}

// icmpv4Types names ICMPv4 types and codes as gopacket (and so Hubble) does.
var icmpv4Types = map[uint8]icmpType{
	0: {name: "EchoReply"},
	3: {name: "DestinationUnreachable", codes: []string{"Net", "Host", "Protocol", "Port", "FragmentationNeeded",
		"SourceRoutingFailed", "NetUnknown", "HostUnknown", "SourceIsolated", "NetAdminProhibited",
		"HostAdminProhibited", "NetTOS", "HostTOS", "CommAdminProhibited", "HostPrecedence", "PrecedenceCutoff"}},
	4:  {name: "SourceQuench"},
	5:  {name: "Redirect", codes: []string{"Network", "Host", "TOS+Network", "TOS+Host"}},
	8:  {name: "EchoRequest"},
	9:  {name: "RouterAdvertisement"},
	10: {name: "RouterSolicitation"},
	11: {name: "TimeExceeded", codes: []string{"TTLExceeded", "FragmentReassemblyTimeExceeded"}},
	12: {name: "ParameterProblem", codes: []string{"PointerIndicatesError", "MissingOption", "BadLength"}},
	13: {name: "TimestampRequest"},
	14: {name: "TimestampReply"},
	15: {name: "InfoRequest"},
	16: {name: "InfoReply"},
	17: {name: "AddressMaskRequest"},
	18: {name: "AddressMaskReply"},
}

func icmpv4(typ, code uint8) string {
	t, ok := icmpv4Types[typ]
	switch {
	case !ok:
		return fmt.Sprintf("%d(%d)", typ, code)
	case t.codes == nil && code == 0:
		return t.name
	case int(code) < len(t.codes):
		return t.name + "(" + t.codes[code] + ")"
	}
	return fmt.Sprintf("%s(Code: %d)", t.name, code)
}

func join(fs []Format) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}

// dnsSummary is Hubble's DNS summary: "DNS Answer RCode: REFUSED
// (Proxy other.example.com. A)", "DNS Answer "198.19.1.11" TTL: 30
// (Proxy api.example.com. A)".
func dnsSummary(d *flow.DNS) string {
	q := fmt.Sprintf("(Proxy %s %s)", d.Query, strings.Join(d.QTypes, ","))
	if d.RCode != "NOERROR" {
		return "DNS Answer RCode: " + d.RCode + " " + q
	}
	ips := make([]string, len(d.IPs))
	for i, ip := range d.IPs {
		ips[i] = ip.String()
	}
	return fmt.Sprintf("DNS Answer %q TTL: %d %s", strings.Join(ips, ","), d.TTL, q)
}

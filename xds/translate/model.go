package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp/syntax"
	"slices"
	"strings"
)

// Direction says which side of a redirected connection the local pod is on.
type Direction string

// Directions.
const (
	// Ingress: a connection to a local pod's port, policed by that pod's
	// ingress rules.
	Ingress Direction = "ingress"
	// Egress: a connection from a local pod to a remote port, policed by
	// that pod's egress rules.
	Egress Direction = "egress"
)

// Node is one node's L7 configuration: everything its Envoy needs to police
// the connections the datapath redirects to it.
type Node struct {
	// ProxyPort is the port of the transparent listener the datapath
	// redirects connections to (e.g. 15001).
	ProxyPort uint16 `json:"proxyPort"`
	// ListenAddress is the transparent listener's address; unset is
	// 127.0.0.1 (the datapath's TPROXY rule delivers there, and nothing
	// else on the network can reach it).
	ListenAddress netip.Addr `json:"listenAddress,omitzero"`
	// UpstreamMark, when not 0, makes Envoy connect upstream from the
	// client's own address (original_src) with this socket mark, so the far
	// side's policy still sees the client's identity and the datapath knows
	// the connection comes from the proxy.
	UpstreamMark uint32 `json:"upstreamMark,omitempty"`
	// AccessLogCluster names the gRPC access-log service cluster (e.g.
	// "membrane-als"); "" disables access logging. The cluster itself is
	// not generated here: it is static in Envoy's bootstrap.
	AccessLogCluster string `json:"accessLogCluster,omitempty"`
	// Ports are the redirected ports. Entries with the same direction,
	// endpoint and port are merged (their rules are OR-ed).
	Ports []Port `json:"ports,omitempty"`
	// GroupLabels name groups of pods sharing a filter chain (see Group)
	// otherwise than after their origins, so a chain keeps its name, and
	// Envoy the chain and its connections, while the policies of its pods
	// change (see InheritLabels). Labels of groups n does not have are
	// ignored.
	GroupLabels []GroupLabel `json:"groupLabels,omitempty"`
}

// GroupLabel is the label of the group of pods whose rules in Direction
// on Port come from Origins (sorted, without duplicates).
type GroupLabel struct {
	Direction Direction `json:"direction"`
	Port      uint16    `json:"port"`
	Origins   []string  `json:"origins"`
	// Label is "group-" and 12 hexadecimal digits, as a digest of origins
	// gives.
	Label string `json:"label"`
}

// Port is one redirected port of one local pod.
type Port struct {
	Direction Direction `json:"direction"`
	// Endpoint is the local pod's address: the destination of ingress
	// connections, the source of egress ones. IPv4 only for now (an
	// IPv4-mapped IPv6 address is accepted).
	Endpoint netip.Addr `json:"endpoint"`
	// Port is the destination port.
	Port uint16 `json:"port"`
	// Rules are OR-ed: a request passes when one of them allows it. A port
	// with no rules denies every request.
	Rules []Rule `json:"rules,omitempty"`
	// Origins name where the rules come from (e.g. the policies). They are
	// not part of Envoy's configuration: RouteOrigins reports them per
	// route configuration, to say what a rejected one is about.
	Origins []string `json:"origins,omitempty"`
}

// Rule allows requests between the pod and some peers.
type Rule struct {
	// Peers are the allowed remote addresses (the remote identities' pod
	// IPs as /32, or CIDRs): the connection's source for ingress, its
	// original destination for egress. Empty allows every peer.
	Peers []netip.Prefix `json:"peers,omitempty"`
	// HTTP rules are OR-ed; empty allows every request.
	HTTP []HTTPRule `json:"http,omitempty"`
}

// HTTPRule matches a request when every field given matches; the empty rule
// matches every request. Method, Path and Host are RE2 regular expressions
// matched against the whole value: Method against :method, Path against the
// path without its query string (after Envoy's RFC 3986 normalization and
// merging of slashes), Host against :authority (the Host header of
// HTTP/1.1), port included when the client sent one.
type HTTPRule struct {
	Method  string   `json:"method,omitempty"`
	Path    string   `json:"path,omitempty"`
	Host    string   `json:"host,omitempty"`
	Headers []Header `json:"headers,omitempty"`
}

// Header requires a request header: present, or with exactly Value when
// Value is not empty. Names are case-insensitive; "Host" is :authority.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// Validate reports every problem of the input, each naming its field (e.g.
// `ports[1].rules[0].http[2].path: invalid regex "(": …`), joined.
func (n Node) Validate() error {
	return n.validate(checkRegex)
}

// validate is Validate with checkRegex as checkRe (a Translator remembers
// the regexes it checked). Field names are only built for a problem: a
// valid node of many rules is checked without formatting any.
func (n Node) validate(checkRe func(string) error) error {
	var errs []error
	fail := func(field func() string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field(), fmt.Sprintf(format, args...)))
	}
	name := func(s string) func() string { return func() string { return s } }
	if n.ProxyPort == 0 {
		fail(name("proxyPort"), "must not be 0")
	}
	if n.ListenAddress.IsValid() {
		if err := checkIPv4(n.ListenAddress); err != nil {
			fail(name("listenAddress"), "%v", err)
		}
	}
	for i, p := range n.Ports {
		f := func(sub string) func() string { return func() string { return fmt.Sprintf("ports[%d].%s", i, sub) } }
		if p.Direction != Ingress && p.Direction != Egress {
			fail(f("direction"), "must be %q or %q, got %q", Ingress, Egress, p.Direction)
		}
		if err := checkIPv4(p.Endpoint); err != nil {
			fail(f("endpoint"), "%v", err)
		}
		if p.Port == 0 {
			fail(f("port"), "must not be 0")
		}
		for j, r := range p.Rules {
			f := func(sub string) func() string { return f(fmt.Sprintf("rules[%d].%s", j, sub)) }
			for k, pfx := range r.Peers {
				if !pfx.IsValid() {
					fail(f(fmt.Sprintf("peers[%d]", k)), "missing or invalid prefix")
				} else if err := checkIPv4(pfx.Addr()); err != nil {
					fail(f(fmt.Sprintf("peers[%d]", k)), "%v", err)
				}
			}
			for k, h := range r.HTTP {
				f := func(sub string) func() string { return f(fmt.Sprintf("http[%d].%s", k, sub)) }
				for _, re := range []struct{ field, expr string }{
					{"method", h.Method}, {"path", h.Path}, {"host", h.Host},
				} {
					if re.expr == "" {
						continue
					}
					if err := checkRe(re.expr); err != nil {
						fail(f(re.field), "invalid regex %q: %v", re.expr, err)
					}
				}
				for l, hdr := range h.Headers {
					f := func(sub string) func() string { return f(fmt.Sprintf("headers[%d].%s", l, sub)) }
					if !isToken(hdr.Name) {
						fail(f("name"), "invalid header name %q: want an HTTP token (no pseudo-headers: use method, path or host)", hdr.Name)
					}
					if strings.ContainsAny(hdr.Value, "\x00\r\n") {
						fail(f("value"), "invalid header value %q: contains NUL, CR or LF", hdr.Value)
					}
				}
			}
		}
	}
	validateLabels(n.GroupLabels, func(i int, sub, format string, args ...any) {
		fail(func() string { return fmt.Sprintf("groupLabels[%d].%s", i, sub) }, format, args...)
	})
	return errors.Join(errs...)
}

// validateLabels reports, through fail, each problem of labels: a
// malformed label, unsorted origins, a group labelled twice or a label of
// two groups of one direction and port.
func validateLabels(labels []GroupLabel, fail func(i int, field, format string, args ...any)) {
	groups, seen := map[string]bool{}, map[string]bool{}
	for i, gl := range labels {
		if gl.Direction != Ingress && gl.Direction != Egress {
			fail(i, "direction", "must be %q or %q, got %q", Ingress, Egress, gl.Direction)
		}
		if !isGroupLabel(gl.Label) {
			fail(i, "label", "%q is not \"group-\" and 12 hexadecimal digits", gl.Label)
		}
		if !slices.IsSorted(gl.Origins) || len(slices.Compact(slices.Clone(gl.Origins))) != len(gl.Origins) {
			fail(i, "origins", "must be sorted, without duplicates")
		}
		g, l := groupKey(gl.Direction, gl.Port, gl.Origins), labelKey(gl.Direction, gl.Port, gl.Label)
		if groups[g] || seen[l] {
			fail(i, "label", "a second label for the same group, or a label of two groups of one port and direction")
		}
		groups[g], seen[l] = true, true
	}
}

// isGroupLabel reports whether l is "group-" and 12 lower-case
// hexadecimal digits.
func isGroupLabel(l string) bool {
	hex, ok := strings.CutPrefix(l, "group-")
	return ok && len(hex) == 12 && strings.Trim(hex, "0123456789abcdef") == ""
}

func checkIPv4(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("missing or invalid address")
	case !a.Unmap().Is4():
		return fmt.Errorf("%s: IPv6 is not supported yet", a)
	}
	return nil
}

// checkRegex parses re with RE2's syntax (Go's regexp/syntax with Perl
// flags is RE2's). Envoy also limits a regex's compiled program size
// (runtime key re2.max_program_size.error_level, 100 by default), which
// only Envoy itself can check: a regex over it makes Envoy reject the
// route configuration. (The regexes the translation turns into plain
// matchers never reach Envoy as regexes.)
func checkRegex(re string) error {
	if _, _, _, ok := quickLiteral(re); re == "" || ok {
		return nil
	}
	_, err := syntax.Parse(re, syntax.Perl)
	return err
}

// isToken reports whether s is an RFC 9110 token: a valid header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

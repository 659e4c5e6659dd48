package model

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Protocol is an L4 protocol by its IP protocol number. It is the one
// protocol type of the control plane: Services, policy rules and the
// resolver's datapath rules use it.
type Protocol uint8

// Protocols known by name; any other number works too.
const (
	// AnyProtocol in a policy rule: every protocol (an L3-only rule) or,
	// with a port, TCP, UDP and SCTP.
	AnyProtocol Protocol = 0
	ICMP        Protocol = 1
	TCP         Protocol = 6
	UDP         Protocol = 17
	SCTP        Protocol = 132
)

// String is the protocol's name (ANY for AnyProtocol) or, for a protocol
// without one, its number.
func (p Protocol) String() string {
	switch p {
	case AnyProtocol:
		return "ANY"
	case ICMP:
		return "ICMP"
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

// MarshalText writes the protocol's name (or number).
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads what ParseIPProtocol reads.
func (p *Protocol) UnmarshalText(b []byte) error {
	v, err := ParseIPProtocol(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ParseProtocol reads a Kubernetes Service port's protocol: TCP (also ""),
// UDP or SCTP.
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "TCP", "":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", s)
}

// ParseIPProtocol reads a policy's protocol: a name (ANY, ICMP, TCP, UDP,
// SCTP, in any case) or a number; "" is AnyProtocol.
func ParseIPProtocol(s string) (Protocol, error) {
	switch strings.ToUpper(s) {
	case "", "ANY":
		return AnyProtocol, nil
	case "ICMP":
		return ICMP, nil
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("unknown protocol %q", s)
	}
	return Protocol(n), nil
}

// Direction is relative to an endpoint: Ingress is traffic to it, Egress
// traffic from it. The numbers are the policy datapath's.
type Direction uint8

// Directions.
const (
	Ingress Direction = 0
	Egress  Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// MarshalText writes the direction's name.
func (d Direction) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads ingress or egress.
func (d *Direction) UnmarshalText(b []byte) error {
	switch string(b) {
	case "ingress":
		*d = Ingress
	case "egress":
		*d = Egress
	default:
		return fmt.Errorf("unknown direction %q", b)
	}
	return nil
}

// Verdict is what a policy rule does with a new flow. The numbers are the
// policy datapath's.
type Verdict uint8

// Verdicts.
const (
	Allow    Verdict = 1
	Deny     Verdict = 2
	Redirect Verdict = 3 // allow, through the L7 proxy
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Redirect:
		return "redirect"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// MarshalText writes the verdict's name.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads allow, deny or redirect.
func (v *Verdict) UnmarshalText(b []byte) error {
	switch string(b) {
	case "allow":
		*v = Allow
	case "deny":
		*v = Deny
	case "redirect":
		*v = Redirect
	default:
		return fmt.Errorf("unknown verdict %q", b)
	}
	return nil
}

// TCPFlags are the flags of a TCP header, bit i as in the header: FIN,
// SYN, RST, PSH, ACK, URG, ECE, CWR.
type TCPFlags uint8

// TCP flags.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// tcpFlagOrder is Hubble's order of flag names.
var tcpFlagOrder = [...]struct {
	flag TCPFlags
	name string
}{{SYN, "SYN"}, {ACK, "ACK"}, {RST, "RST"}, {FIN, "FIN"}, {PSH, "PSH"}, {URG, "URG"}, {ECE, "ECE"}, {CWR, "CWR"}}

// Names returns the set flags' names in Hubble's order (SYN, ACK, RST,
// FIN, PSH, URG, ECE, CWR).
func (f TCPFlags) Names() []string {
	var names []string
	for _, o := range tcpFlagOrder {
		if f&o.flag != 0 {
			names = append(names, o.name)
		}
	}
	return names
}

// String is Hubble's form, e.g. "SYN, ACK".
func (f TCPFlags) String() string { return strings.Join(f.Names(), ", ") }

// MarshalJSON writes the flags as a list of names.
func (f TCPFlags) MarshalJSON() ([]byte, error) {
	names := f.Names()
	if names == nil {
		names = []string{}
	}
	return json.Marshal(names)
}

// UnmarshalJSON reads a list of flag names.
func (f *TCPFlags) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return fmt.Errorf("tcp flags: %w", err)
	}
	var v TCPFlags
	for _, n := range names {
		flag, ok := tcpFlag(n)
		if !ok {
			return fmt.Errorf("tcp flags: unknown flag %q", n)
		}
		v |= flag
	}
	*f = v
	return nil
}

// tcpFlag finds one flag by its name (SYN, ACK, ...).
func tcpFlag(name string) (TCPFlags, bool) {
	for _, o := range tcpFlagOrder {
		if o.name == name {
			return o.flag, true
		}
	}
	return 0, false
}

// Package dnsproxy is the node's transparent DNS proxy for DNS-aware
// policy. The datapath redirects the DNS traffic (UDP and TCP) of pods that
// DNS rules select to it with TPROXY, keeping the original destination; the
// proxy asks Policy whether the source may ask that question of that
// server, answers a refused question itself (REFUSED, or nothing in "drop"
// mode), forwards an allowed one to the server the pod asked (same query
// ID, same bytes), hands the IPs of the answer to Observer.Learned (which
// allows them for the pod) and only then passes the answer to the pod,
// from the server's address.
//
//	p := dnsproxy.New(log, dnsproxy.Config{ListenAddr: lo, Port: 10053, Mark: 0x0A00}, policy, observer, emitFlow)
//	reg.MustRegister(p.Collector())
//	go p.Run(ctx)
//
// Sockets are created in the network namespace of the thread that creates
// them, as the agent's threads all are: Run and its goroutines open
// listeners, upstream and reply sockets as they need them. The proxy needs
// CAP_NET_ADMIN (IP_TRANSPARENT, SO_MARK) and CAP_NET_RAW (UDP answers go
// out through a raw socket with the server's address and port).
package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Deny responses (Config.DenyResponse).
const (
	DenyRefused = "refused" // answer REFUSED (the default)
	DenyDrop    = "drop"    // send nothing; the client times out
)

// DefaultForwardTimeout bounds the wait for a server's answer; it is below
// the usual 5 s resolver timeout, so that a client sees the SERVFAIL.
const DefaultForwardTimeout = 3 * time.Second

// Config configures a Proxy.
type Config struct {
	// ListenAddr is the IPv4 address of the transparent listeners, the
	// address the node's TPROXY rules deliver to, e.g. 127.0.0.1.
	ListenAddr netip.Addr
	// Port is the UDP and TCP port of the listeners (the proxy port the
	// datapath's redirect mark carries).
	Port uint16
	// DenyResponse is DenyRefused ("" too) or DenyDrop.
	DenyResponse string
	// ForwardTimeout bounds the wait for the server; 0 means
	// DefaultForwardTimeout.
	ForwardTimeout time.Duration
	// Mark is the socket mark (SO_MARK) of forwarded queries, so that the
	// datapath does not redirect them again (the from-proxy mark, 0x0A00);
	// 0 sets none.
	Mark uint32
}

// Validate reports every field that cannot work.
func (c Config) Validate() error {
	var errs []error
	if !c.ListenAddr.Is4() {
		errs = append(errs, fmt.Errorf("listen address %q is not IPv4", c.ListenAddr))
	}
	if c.Port == 0 {
		errs = append(errs, errors.New("port must not be 0"))
	}
	switch c.DenyResponse {
	case "", DenyRefused, DenyDrop:
	default:
		errs = append(errs, fmt.Errorf("deny response %q: want %q or %q", c.DenyResponse, DenyRefused, DenyDrop))
	}
	if c.ForwardTimeout < 0 {
		errs = append(errs, fmt.Errorf("forward timeout %s is negative", c.ForwardTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid DNS proxy config: %w", err)
	}
	return nil
}

// Verdict is what the proxy did with a query, in the flow API's words.
type Verdict string

// Verdicts.
const (
	// Forwarded: allowed, forwarded, and the server's answer passed on.
	Forwarded Verdict = "FORWARDED"
	// Dropped: refused by policy (answered REFUSED, or not at all).
	Dropped Verdict = "DROPPED"
	// Error: allowed, but no answer of the server could be passed on
	// (no answer in time, a malformed one, Learned failed); the client
	// got SERVFAIL. Also a malformed query (FORMERR).
	Error Verdict = "ERROR"
)

// Reasons of Answer.Reason.
const (
	ReasonRefused = "DNS query refused by policy"
)

// NoResponse is Answer.RCode when the client got no response.
const NoResponse = -1

// Protocols of Request.Protocol.
const (
	UDP = "udp"
	TCP = "tcp"
)

// Request is one question a pod asked.
type Request struct {
	// Source is the pod's address and port.
	Source netip.AddrPort
	// Server is the original destination: the server the pod asked.
	Server netip.AddrPort
	// Protocol is UDP or TCP.
	Protocol string
	// ID is the query ID (kept when forwarding).
	ID uint16
	// Name is the question's name, canonical: lower case, with the
	// trailing dot.
	Name string
	// Type is the question's type (dns.TypeA, ...).
	Type uint16
}

// TypeName is the question type's mnemonic, e.g. "A", "AAAA".
func (r Request) TypeName() string { return typeName(r.Type) }

// Answer is what became of a Request.
type Answer struct {
	Request
	// RCode is the response code the client got (dns.RcodeSuccess, ...),
	// NoResponse if it got none.
	RCode int
	// IPs are the A and AAAA records of Name in the answer, following its
	// CNAME chain; sorted, without duplicates.
	IPs []netip.Addr
	// TTL is the smallest TTL of the records that led to IPs (the CNAMEs
	// of the chain and the addresses).
	TTL time.Duration
	// Verdict and, for Dropped and Error, the reason.
	Verdict Verdict
	Reason  string
	// Duration is the time from the query's arrival to the answer (or
	// the decision not to answer).
	Duration time.Duration
}

// RCodeName is the response code's mnemonic, e.g. "NOERROR", "NXDOMAIN",
// "REFUSED"; "NONE" for NoResponse.
func (a Answer) RCodeName() string { return rcodeName(a.RCode) }

// Policy decides which questions a pod may ask.
type Policy interface {
	// Allowed reports whether r.Source may ask r.Server the question
	// (the DNS rules of the source pod for that server and port).
	Allowed(ctx context.Context, r Request) bool
}

// Observer learns the IPs of allowed answers.
type Observer interface {
	// Learned is called for every allowed answer with IPs, and completes
	// before the answer goes to the client: this is where the IPs become
	// allowed destinations of the pod. An error makes the client's answer
	// SERVFAIL (Verdict Error, with the error as Reason). ctx ends after
	// Config.ForwardTimeout.
	Learned(ctx context.Context, a Answer) error
}

func typeName(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}

func rcodeName(rc int) string {
	if rc == NoResponse {
		return "NONE"
	}
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/miekg/dns"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
)

// handle decides about one query whose Source, Server and Protocol r
// holds, and returns the response for the client (nil: none) and the
// Answer for flows and metrics.
func (p *Proxy) handle(ctx context.Context, r Request, query []byte) ([]byte, Answer) {
	var q dns.Msg
	if err := q.Unpack(query); err != nil || q.Response || len(q.Question) != 1 {
		return p.formErr(r, query, err, &q)
	}
	r.ID = q.Id
	r.Name = matchpattern.Canonical(q.Question[0].Name)
	r.Type = q.Question[0].Qtype
	a := Answer{Request: r, RCode: NoResponse}

	if r.Server == netip.AddrPortFrom(p.c.ListenAddr, p.c.Port) {
		// Sent to the proxy itself, not redirected: forwarding would loop.
		a.Verdict, a.Reason = Error, "query addressed to the proxy itself, not redirected to it"
		return p.respond(&q, dns.RcodeRefused, &a)
	}
	if p.policy == nil || !p.policy.Allowed(ctx, r) {
		a.Verdict, a.Reason = Dropped, ReasonRefused
		if p.c.DenyResponse == DenyDrop {
			return nil, a
		}
		return p.respond(&q, dns.RcodeRefused, &a)
	}

	resp, raw, err := p.forward(ctx, r, &q, query)
	if err != nil {
		a.Verdict, a.Reason = Error, err.Error()
		return p.respond(&q, dns.RcodeServerFailure, &a)
	}
	a.Verdict, a.RCode = Forwarded, resp.Rcode
	if resp.Rcode == dns.RcodeSuccess {
		a.IPs, a.TTL = addresses(resp, q.Question[0].Name)
	}
	if len(a.IPs) > 0 && p.observer != nil {
		lctx, cancel := context.WithTimeout(ctx, p.c.ForwardTimeout)
		err := p.observer.Learned(lctx, a)
		cancel()
		if err != nil {
			a.Verdict, a.Reason = Error, fmt.Sprintf("allow the answer's IPs: %v", err)
			return p.respond(&q, dns.RcodeServerFailure, &a)
		}
	}
	return raw, a
}

// respond builds the proxy's own response with rcode to q, recording it
// in a.
func (p *Proxy) respond(q *dns.Msg, rcode int, a *Answer) ([]byte, Answer) {
	m := new(dns.Msg)
	m.SetRcode(q, rcode)
	out, err := m.Pack()
	if err != nil {
		p.log.Debug("pack DNS response", "rcode", rcodeName(rcode), "err", err)
		a.RCode = NoResponse
		return nil, *a
	}
	a.RCode = rcode
	return out, *a
}

// formErr answers a query that is not one: FORMERR with its ID if it has a
// header, nothing otherwise.
func (p *Proxy) formErr(r Request, query []byte, err error, q *dns.Msg) ([]byte, Answer) {
	reason := "malformed query"
	switch {
	case err != nil:
		reason = fmt.Sprintf("malformed query: %v", err)
	case q.Response:
		reason = "a response, not a query"
	case len(q.Question) != 1:
		reason = fmt.Sprintf("%d questions, want 1", len(q.Question))
	}
	a := Answer{Request: r, RCode: NoResponse, Verdict: Error, Reason: reason}
	if len(query) < 12 || q.Response {
		return nil, a
	}
	a.ID = uint16(query[0])<<8 | uint16(query[1])
	m := new(dns.Msg)
	m.Id, m.Response, m.Rcode = a.ID, true, dns.RcodeFormatError
	out, perr := m.Pack()
	if perr != nil {
		return nil, a
	}
	a.RCode = dns.RcodeFormatError
	return out, a
}

// forward sends query (the client's bytes, same ID) to r.Server over
// r.Protocol and returns the server's response, parsed and as it came.
func (p *Proxy) forward(ctx context.Context, r Request, q *dns.Msg, query []byte) (*dns.Msg, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.c.ForwardTimeout)
	defer cancel()
	var opts []sockopt
	if p.c.Mark != 0 {
		opts = append(opts, mark(p.c.Mark))
	}
	d := net.Dialer{Control: control(opts...)}
	network := "udp4"
	if r.Protocol == TCP {
		network = "tcp4"
	}
	c, err := d.DialContext(ctx, network, r.Server.String())
	if err != nil {
		return nil, nil, fmt.Errorf("forward to %s/%s: %w", r.Server, r.Protocol, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return nil, nil, fmt.Errorf("forward to %s/%s: %w", r.Server, r.Protocol, err)
	}
	noAnswer := func(err error) error {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
			err = fmt.Errorf("no answer within %s", p.c.ForwardTimeout)
		}
		return fmt.Errorf("forward to %s/%s: %w", r.Server, r.Protocol, err)
	}

	if r.Protocol == TCP {
		if err := writeTCPMsg(c, query, deadline); err != nil {
			return nil, nil, noAnswer(err)
		}
		raw, err := readTCPMsg(c)
		if err != nil {
			return nil, nil, noAnswer(err)
		}
		resp, err := parseResponse(q, raw)
		if err != nil {
			return nil, nil, fmt.Errorf("answer of %s/%s: %w", r.Server, r.Protocol, err)
		}
		return resp, raw, nil
	}

	if _, err := c.Write(query); err != nil {
		return nil, nil, noAnswer(err)
	}
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	buf := *bp
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, nil, noAnswer(err)
		}
		raw := buf[:n]
		resp, err := parseResponse(q, raw)
		if err != nil {
			// Not the answer to this query (stray, spoofed or broken):
			// keep waiting for it, as a stub resolver does.
			p.log.Debug("ignoring a datagram from the server", "server", r.Server, "err", err)
			continue
		}
		return resp, slices.Clone(raw), nil
	}
}

// parseResponse parses raw and checks it answers q.
func parseResponse(q *dns.Msg, raw []byte) (*dns.Msg, error) {
	resp := new(dns.Msg)
	if err := resp.Unpack(raw); err != nil {
		// A truncated answer may not parse completely; its header and
		// question do.
		if len(raw) < 12 || raw[2]&0x02 == 0 {
			return nil, fmt.Errorf("malformed answer: %w", err)
		}
		resp = new(dns.Msg)
		if herr := resp.Unpack(raw[:12]); herr != nil {
			return nil, fmt.Errorf("malformed answer: %w", err)
		}
	}
	switch {
	case !resp.Response:
		return nil, errors.New("not a response")
	case resp.Id != q.Id:
		return nil, fmt.Errorf("response ID %d, want %d", resp.Id, q.Id)
	case len(resp.Question) > 0 && !sameQuestion(resp.Question[0], q.Question[0]):
		return nil, fmt.Errorf("response to %s %s, want %s %s", resp.Question[0].Name, typeName(resp.Question[0].Qtype), q.Question[0].Name, typeName(q.Question[0].Qtype))
	}
	return resp, nil
}

func sameQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && matchpattern.Canonical(a.Name) == matchpattern.Canonical(b.Name)
}

// addresses returns the A and AAAA records of name in resp's answer
// section, following CNAMEs from name, sorted and unique, and the smallest
// TTL of the records on the way.
func addresses(resp *dns.Msg, name string) ([]netip.Addr, time.Duration) {
	names := map[string]bool{matchpattern.Canonical(name): true}
	minTTL := uint32(0)
	first := true
	use := func(rr dns.RR) {
		if ttl := rr.Header().Ttl; first || ttl < minTTL {
			minTTL, first = ttl, false
		}
	}
	// The chain may come in any order: follow it until it stops growing.
	var chain []dns.RR
	for grown := true; grown; {
		grown = false
		for _, rr := range resp.Answer {
			c, ok := rr.(*dns.CNAME)
			if !ok || !names[matchpattern.Canonical(c.Hdr.Name)] || names[matchpattern.Canonical(c.Target)] {
				continue
			}
			names[matchpattern.Canonical(c.Target)] = true
			chain = append(chain, c)
			grown = true
		}
	}
	var ips []netip.Addr
	for _, rr := range resp.Answer {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if !names[matchpattern.Canonical(rr.Header().Name)] {
			continue
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		ips = append(ips, addr.Unmap())
		use(rr)
	}
	if len(ips) == 0 {
		return nil, 0
	}
	for _, c := range chain {
		use(c)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return slices.Compact(ips), time.Duration(minTTL) * time.Second
}

package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
)

// testPolicy allows the pod to ask for names matching its patterns.
type testPolicy struct {
	pod      netip.Addr
	patterns []matchpattern.Matcher
}

func newTestPolicy(t testing.TB, patterns ...string) *testPolicy {
	p := &testPolicy{pod: netip.MustParseAddr(podAddr)}
	for _, s := range patterns {
		m, err := matchpattern.Compile(s)
		must(t, err)
		p.patterns = append(p.patterns, m)
	}
	return p
}

func (p *testPolicy) Allowed(_ context.Context, r Request) bool {
	return r.Source.Addr() == p.pod && slices.ContainsFunc(p.patterns, func(m matchpattern.Matcher) bool { return m.Match(r.Name) })
}

// recorder is the test's Observer and flow sink.
type recorder struct {
	delay time.Duration // how long Learned takes

	mu      sync.Mutex
	fail    error // what Learned returns
	learned []Answer
	done    atomic.Int64 // when the last Learned returned, UnixNano
	flows   []Answer
	flowc   chan Answer
}

func newRecorder() *recorder { return &recorder{flowc: make(chan Answer, 1000)} }

func (r *recorder) Learned(_ context.Context, a Answer) error {
	time.Sleep(r.delay)
	r.mu.Lock()
	r.learned = append(r.learned, a)
	fail := r.fail
	r.mu.Unlock()
	r.done.Store(time.Now().UnixNano())
	return fail
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

func (r *recorder) flow(a Answer) {
	r.mu.Lock()
	r.flows = append(r.flows, a)
	r.mu.Unlock()
	r.flowc <- a
}

// nextFlow waits for the next flow.
func (r *recorder) nextFlow(t testing.TB) Answer {
	t.Helper()
	select {
	case a := <-r.flowc:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("no flow")
		return Answer{}
	}
}

// runProxy runs a proxy in the node until the test ends.
func runProxy(t testing.TB, w *world, c Config, p Policy, o Observer, flows func(Answer)) *Proxy {
	t.Helper()
	c.ListenAddr, c.Port, c.Mark = w.tproxy.ListenAddr, w.tproxy.Port, fromProxy
	px := New(testLogger(t), c, p, o, flows)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- px.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	select {
	case <-px.Ready():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy did not get ready")
	}
	return px
}

// query builds a query with a fixed ID.
func query(name string, qtype uint16, id uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = id
	return m
}

// exchangeUDP sends q from the pod's socket c to server and returns the
// response, where it came from and when it arrived.
func exchangeUDP(c *net.UDPConn, server netip.AddrPort, q *dns.Msg, wait time.Duration) (*dns.Msg, netip.AddrPort, time.Time, error) {
	out, err := q.Pack()
	if err != nil {
		return nil, netip.AddrPort{}, time.Time{}, err
	}
	if _, err := c.WriteToUDPAddrPort(out, server); err != nil {
		return nil, netip.AddrPort{}, time.Time{}, err
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, netip.AddrPort{}, time.Time{}, err
	}
	buf := make([]byte, 65535)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	at := time.Now()
	if err != nil {
		return nil, from, at, err
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(buf[:n]); err != nil {
		return nil, from, at, err
	}
	return resp, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), at, nil
}

// exchangeTCP sends q on c and returns the response.
func exchangeTCP(c net.Conn, q *dns.Msg, wait time.Duration) (*dns.Msg, error) {
	out, err := q.Pack()
	if err != nil {
		return nil, err
	}
	if err := writeTCPMsg(c, out, time.Now().Add(wait)); err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	raw, err := readTCPMsg(c)
	if err != nil {
		return nil, err
	}
	resp := new(dns.Msg)
	return resp, resp.Unpack(raw)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func counter(t testing.TB, px *Proxy, rcode, verdict string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	must(t, reg.Register(px.Collector()))
	mfs, err := reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "membrane_dns_proxy_responses_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["rcode"] == rcode && labels["verdict"] == verdict {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestProxy(t *testing.T) {
	w := newWorld(t)
	rec := newRecorder()
	rec.delay = 50 * time.Millisecond
	pol := newTestPolicy(t, "*.example.com", "**.example.net")
	px := runProxy(t, w, Config{ForwardTimeout: 500 * time.Millisecond}, pol, rec, rec.flow)
	pod := w.podSocket(t)
	podPort := pod.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	wait := 5 * time.Second

	t.Run("udp allowed", func(t *testing.T) {
		resp, from, at, err := exchangeUDP(pod, serverAddr, query("API.example.com.", dns.TypeA, 0xBEEF), wait)
		if err != nil {
			t.Fatal(err)
		}
		if from != serverAddr {
			t.Errorf("answer from %s, want from the server the pod asked, %s", from, serverAddr)
		}
		if resp.Id != 0xBEEF || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 2 {
			t.Errorf("answer ID %#x rcode %s with %d records, want ID 0xbeef NOERROR with 2:\n%s", resp.Id, dns.RcodeToString[resp.Rcode], len(resp.Answer), resp)
		}
		if w.timesAsked("api.example.com.") != 1 {
			t.Errorf("the server was asked %d times, want once", w.timesAsked("api.example.com."))
		}
		done := time.Unix(0, rec.done.Load())
		if rec.done.Load() == 0 || done.After(at) {
			t.Errorf("Learned returned at %s, the client got the answer at %s: want Learned first", done.Format(time.StampMicro), at.Format(time.StampMicro))
		}
		a := rec.nextFlow(t)
		want := Answer{
			Request: Request{Source: netip.AddrPortFrom(netip.MustParseAddr(podAddr), podPort), Server: serverAddr, Protocol: UDP, ID: 0xBEEF, Name: "api.example.com.", Type: dns.TypeA},
			RCode:   dns.RcodeSuccess, IPs: apiIPs, TTL: 60 * time.Second, Verdict: Forwarded,
		}
		a.Duration = 0
		if fmt.Sprint(a) != fmt.Sprint(want) {
			t.Errorf("flow\n got %+v\nwant %+v", a, want)
		}
		if a.Duration > 0 && a.Duration < rec.delay {
			t.Errorf("duration %s shorter than Learned", a.Duration)
		}
		rec.mu.Lock()
		learned := slices.Clone(rec.learned)
		rec.mu.Unlock()
		if len(learned) != 1 || !slices.Equal(learned[0].IPs, apiIPs) {
			t.Errorf("learned %+v, want one answer with %v", learned, apiIPs)
		}
	})

	t.Run("cname chain", func(t *testing.T) {
		resp, _, _, err := exchangeUDP(pod, serverAddr, query("www.example.com.", dns.TypeA, 7), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != dns.RcodeSuccess {
			t.Fatalf("rcode %s", dns.RcodeToString[resp.Rcode])
		}
		a := rec.nextFlow(t)
		if !slices.Equal(a.IPs, []netip.Addr{webIP}) || a.TTL != 30*time.Second || a.Verdict != Forwarded {
			t.Errorf("flow %+v, want IPs [%s] (the chain's, not the other name's) with TTL 30s", a, webIP)
		}
	})

	t.Run("nxdomain", func(t *testing.T) {
		rec.mu.Lock()
		before := len(rec.learned)
		rec.mu.Unlock()
		resp, _, _, err := exchangeUDP(pod, serverAddr, query("nothing.example.net.", dns.TypeA, 8), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != dns.RcodeNameError {
			t.Errorf("rcode %s, want NXDOMAIN passed on", dns.RcodeToString[resp.Rcode])
		}
		if a := rec.nextFlow(t); a.RCode != dns.RcodeNameError || a.Verdict != Forwarded || len(a.IPs) != 0 {
			t.Errorf("flow %+v", a)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.learned) != before {
			t.Errorf("Learned called for an answer without IPs")
		}
	})

	t.Run("a and aaaa from one socket", func(t *testing.T) {
		// As resolvers do: both questions at once from one socket, and
		// the next pair as soon as the answers are in. The answer's
		// socket must not catch the next query.
		const rounds = 30
		buf := make([]byte, 65535)
		for i := range rounds {
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
				out, err := query("api.example.com.", qt, uint16(1000+2*i)+qt%2).Pack()
				must(t, err)
				if _, err := pod.WriteToUDPAddrPort(out, serverAddr); err != nil {
					t.Fatal(err)
				}
			}
			must(t, pod.SetReadDeadline(time.Now().Add(wait)))
			for range 2 {
				if _, _, err := pod.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
			}
		}
		for range 2 * rounds {
			rec.nextFlow(t)
		}
	})

	t.Run("answer too big for the path", func(t *testing.T) {
		q := query("big.example.com.", dns.TypeA, 20)
		q.SetEdns0(4096, false)
		resp, from, _, err := exchangeUDP(pod, serverAddr, q, wait)
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Truncated || len(resp.Answer) != 0 || resp.Id != 20 || from != serverAddr {
			t.Errorf("UDP answer from %s: %s; want a truncated one without records", from, resp)
		}
		if a := rec.nextFlow(t); a.Verdict != Forwarded || len(a.IPs) != bigRecords || !strings.Contains(a.Reason, "truncated") {
			t.Errorf("flow %+v", a)
		}
		// As the client does: again over TCP.
		resp, err = exchangeTCP(w.podDial(t, serverAddr), query("big.example.com.", dns.TypeA, 21), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Truncated || len(resp.Answer) != bigRecords {
			t.Errorf("TCP answer truncated %v with %d records, want %d", resp.Truncated, len(resp.Answer), bigRecords)
		}
		if a := rec.nextFlow(t); a.Verdict != Forwarded || len(a.IPs) != bigRecords {
			t.Errorf("flow %+v", a)
		}
	})

	t.Run("udp refused", func(t *testing.T) {
		resp, from, _, err := exchangeUDP(pod, serverAddr, query("denied.example.org.", dns.TypeA, 9), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != dns.RcodeRefused || resp.Id != 9 || from != serverAddr || len(resp.Answer) != 0 {
			t.Errorf("answer from %s: %s; want REFUSED, ID 9, from %s", from, resp, serverAddr)
		}
		if n := w.timesAsked("denied.example.org."); n != 0 {
			t.Errorf("the server was asked %d times, want never", n)
		}
		if a := rec.nextFlow(t); a.Verdict != Dropped || a.Reason != ReasonRefused || a.RCode != dns.RcodeRefused || a.Name != "denied.example.org." {
			t.Errorf("flow %+v, want DROPPED %q", a, ReasonRefused)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		before := w.timesAsked("api.example.com.")
		c := w.podDial(t, serverAddr)
		if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != serverAddr {
			t.Errorf("connected to %s", got)
		}
		// Two queries on one connection: allowed, then refused.
		resp, err := exchangeTCP(c, query("api.example.com.", dns.TypeA, 0x1234), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Id != 0x1234 || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 2 {
			t.Errorf("answer %s", resp)
		}
		a := rec.nextFlow(t)
		if a.Protocol != TCP || a.Verdict != Forwarded || !slices.Equal(a.IPs, apiIPs) || a.Server != serverAddr {
			t.Errorf("flow %+v", a)
		}
		resp, err = exchangeTCP(c, query("denied.example.org.", dns.TypeA, 0x1235), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Id != 0x1235 || resp.Rcode != dns.RcodeRefused {
			t.Errorf("answer %s, want REFUSED", resp)
		}
		if a := rec.nextFlow(t); a.Protocol != TCP || a.Verdict != Dropped {
			t.Errorf("flow %+v", a)
		}
		if n := w.timesAsked("api.example.com.") - before; n != 1 {
			t.Errorf("the server was asked %d times for api.example.com. over TCP, want once", n)
		}
	})

	t.Run("server silent", func(t *testing.T) {
		for _, proto := range []string{UDP, TCP} {
			start := time.Now()
			var resp *dns.Msg
			var err error
			if proto == UDP {
				resp, _, _, err = exchangeUDP(pod, silentAddr, query("api.example.com.", dns.TypeA, 10), wait)
			} else {
				resp, err = exchangeTCP(w.podDial(t, silentAddr), query("api.example.com.", dns.TypeA, 10), wait)
			}
			if err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
			if resp.Rcode != dns.RcodeServerFailure || resp.Id != 10 {
				t.Errorf("%s: answer %s, want SERVFAIL", proto, resp)
			}
			if d := time.Since(start); d < 500*time.Millisecond || d > 3*time.Second {
				t.Errorf("%s: SERVFAIL after %s, want after the forward timeout (500ms)", proto, d)
			}
			if a := rec.nextFlow(t); a.Verdict != Error || !strings.Contains(a.Reason, "no answer within 500ms") || a.RCode != dns.RcodeServerFailure {
				t.Errorf("%s: flow %+v", proto, a)
			}
		}
	})

	t.Run("learned fails", func(t *testing.T) {
		rec.setFail(errors.New("ipcache full"))
		defer rec.setFail(nil)
		resp, _, _, err := exchangeUDP(pod, serverAddr, query("api.example.com.", dns.TypeA, 11), wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != dns.RcodeServerFailure || len(resp.Answer) != 0 {
			t.Errorf("answer %s, want SERVFAIL without records", resp)
		}
		if a := rec.nextFlow(t); a.Verdict != Error || !strings.Contains(a.Reason, "ipcache full") || !slices.Equal(a.IPs, apiIPs) {
			t.Errorf("flow %+v", a)
		}
	})

	t.Run("malformed", func(t *testing.T) {
		q := query("api.example.com.", dns.TypeA, 12)
		q.Question = append(q.Question, q.Question[0])
		resp, _, _, err := exchangeUDP(pod, serverAddr, q, wait)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != dns.RcodeFormatError || resp.Id != 12 {
			t.Errorf("answer %s, want FORMERR", resp)
		}
		if a := rec.nextFlow(t); a.Verdict != Error || a.RCode != dns.RcodeFormatError {
			t.Errorf("flow %+v", a)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for _, c := range []struct {
			rcode, verdict string
			want           float64
		}{
			{"NOERROR", "FORWARDED", 3 + 2*30 + 2}, {"NXDOMAIN", "FORWARDED", 1}, {"REFUSED", "DROPPED", 2},
			{"SERVFAIL", "ERROR", 3}, {"FORMERR", "ERROR", 1},
		} {
			if got := counter(t, px, c.rcode, c.verdict); got != c.want {
				t.Errorf("responses{rcode=%s, verdict=%s} = %v, want %v", c.rcode, c.verdict, got, c.want)
			}
		}
	})
}

// TestDropMode checks that in drop mode a refused query gets no answer at
// all, and that without the proxy the redirected query gets none either
// (so that the other tests can fail).
func TestDropMode(t *testing.T) {
	w := newWorld(t)
	pod := w.podSocket(t)
	q := query("denied.example.org.", dns.TypeA, 13)
	if resp, _, _, err := exchangeUDP(pod, serverAddr, q, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("without the proxy: %v, %v; want a timeout", resp, err)
	}
	rec := newRecorder()
	runProxy(t, w, Config{DenyResponse: DenyDrop}, newTestPolicy(t, "*.example.com"), rec, rec.flow)
	if resp, _, _, err := exchangeUDP(pod, serverAddr, q, 500*time.Millisecond); !isTimeout(err) {
		t.Errorf("drop mode: %v, %v; want a timeout", resp, err)
	}
	if a := rec.nextFlow(t); a.Verdict != Dropped || a.RCode != NoResponse || a.RCodeName() != "NONE" {
		t.Errorf("flow %+v, want DROPPED without response", a)
	}
	if n := w.timesAsked("denied.example.org."); n != 0 {
		t.Errorf("the server was asked %d times, want never", n)
	}
	// Allowed names still work.
	if resp, _, _, err := exchangeUDP(pod, serverAddr, query("api.example.com.", dns.TypeA, 14), 5*time.Second); err != nil || resp.Rcode != dns.RcodeSuccess {
		t.Errorf("allowed in drop mode: %v, %v", resp, err)
	}
}

// TestUnmarkedForward checks the test's own guard: a proxy whose forwarded
// queries lack the from-proxy mark gets no answer (SERVFAIL), so the other
// tests show that the proxy marks them.
func TestUnmarkedForward(t *testing.T) {
	w := newWorld(t)
	rec := newRecorder()
	px := New(testLogger(t), Config{ListenAddr: w.tproxy.ListenAddr, Port: w.tproxy.Port, ForwardTimeout: 300 * time.Millisecond},
		newTestPolicy(t, "*.example.com"), rec, rec.flow)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- px.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	<-px.Ready()
	resp, _, _, err := exchangeUDP(w.podSocket(t), serverAddr, query("api.example.com.", dns.TypeA, 15), 5*time.Second)
	if err != nil || resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("unmarked: %v, %v; want SERVFAIL", resp, err)
	}
}

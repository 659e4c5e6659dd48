package dnsproxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func rrs(t *testing.T, lines ...string) []dns.RR {
	t.Helper()
	var out []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rr)
	}
	return out
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		q      string
		answer []string
		want   []string
		ttl    time.Duration
	}{
		{name: "a records", q: "a.example.com.", answer: []string{"a.example.com. 60 IN A 192.0.2.2", "A.Example.COM. 30 IN A 192.0.2.1"},
			want: []string{"192.0.2.1", "192.0.2.2"}, ttl: 30 * time.Second},
		{name: "a and aaaa, duplicates", q: "a.example.com", answer: []string{"a.example.com. 60 IN AAAA 2001:db8::1", "a.example.com. 60 IN A 192.0.2.1", "a.example.com. 90 IN A 192.0.2.1"},
			want: []string{"192.0.2.1", "2001:db8::1"}, ttl: 60 * time.Second},
		{name: "chain out of order", q: "www.example.com.", answer: []string{
			"c.example.net. 300 IN A 192.0.2.3",
			"b.example.net. 20 IN CNAME c.example.net.",
			"www.example.com. 100 IN CNAME b.example.net.",
		}, want: []string{"192.0.2.3"}, ttl: 20 * time.Second},
		{name: "records of other names ignored", q: "www.example.com.", answer: []string{
			"www.example.com. 100 IN CNAME b.example.net.",
			"b.example.net. 200 IN A 192.0.2.3",
			"evil.example.org. 1 IN A 203.0.113.1",
			"x.example.org. 1 IN CNAME evil.example.org.",
		}, want: []string{"192.0.2.3"}, ttl: 100 * time.Second},
		{name: "cname loop", q: "a.example.com.", answer: []string{
			"a.example.com. 10 IN CNAME b.example.com.", "b.example.com. 10 IN CNAME a.example.com.",
		}},
		{name: "cname without address", q: "a.example.com.", answer: []string{"a.example.com. 10 IN CNAME b.example.com."}},
		{name: "empty", q: "a.example.com."},
		{name: "zero ttl", q: "a.example.com.", answer: []string{"a.example.com. 0 IN A 192.0.2.1"}, want: []string{"192.0.2.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.Answer = rrs(t, tc.answer...)
			ips, ttl := addresses(m, tc.q)
			var want []netip.Addr
			for _, s := range tc.want {
				want = append(want, netip.MustParseAddr(s))
			}
			if !slices.Equal(ips, want) || ttl != tc.ttl {
				t.Errorf("addresses = %v, %s; want %v, %s", ips, ttl, want, tc.ttl)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("a.example.com.", dns.TypeA)
	q.Id = 100
	pack := func(m *dns.Msg) []byte {
		out, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ok := new(dns.Msg)
	ok.SetReply(q)
	ok.Question[0].Name = "A.EXAMPLE.com."
	if _, err := parseResponse(q, pack(ok)); err != nil {
		t.Errorf("a matching answer (other case): %v", err)
	}
	otherID := ok.Copy()
	otherID.Id = 101
	otherQ := ok.Copy()
	otherQ.Question[0].Qtype = dns.TypeAAAA
	notResp := q.Copy()
	for name, tc := range map[string]struct {
		raw  []byte
		want string
	}{
		"other id":       {pack(otherID), "response ID 101, want 100"},
		"other question": {pack(otherQ), "response to A.EXAMPLE.com. AAAA"},
		"not a response": {pack(notResp), "not a response"},
		"garbage":        {[]byte{1, 2, 3}, "malformed answer"},
	} {
		if _, err := parseResponse(q, tc.raw); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	if err := (Config{ListenAddr: lo, Port: 10053, DenyResponse: DenyDrop, Mark: 0x0A00}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	err := Config{ListenAddr: netip.MustParseAddr("::1"), DenyResponse: "nxdomain", ForwardTimeout: -time.Second}.Validate()
	for _, want := range []string{`listen address "::1" is not IPv4`, "port must not be 0", `deny response "nxdomain"`, "forward timeout -1s is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to say %q", err, want)
		}
	}
}

func TestNames(t *testing.T) {
	a := Answer{Request: Request{Type: dns.TypeAAAA}, RCode: dns.RcodeNameError}
	if a.TypeName() != "AAAA" || a.RCodeName() != "NXDOMAIN" {
		t.Errorf("names %s %s", a.TypeName(), a.RCodeName())
	}
	a = Answer{Request: Request{Type: 65300}, RCode: NoResponse}
	if a.TypeName() != "TYPE65300" || a.RCodeName() != "NONE" {
		t.Errorf("names %s %s", a.TypeName(), a.RCodeName())
	}
}

package worldhost

import (
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func query(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDNSServerAnswersFromTheZoneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zone.json")
	ip := netip.MustParseAddr("198.19.1.11")
	if err := WriteZone(path, Zone{Origin: "example.com", Records: map[string]Record{"API.example.com": {IPs: []netip.Addr{ip}, TTL: 2}}}); err != nil {
		t.Fatal(err)
	}
	s, err := NewDNSServer(slog.New(slog.DiscardHandler), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		rcode dnsmessage.RCode
		ips   int
	}{
		{"api.example.com.", dnsmessage.RCodeSuccess, 1},
		{"nope.example.com.", dnsmessage.RCodeNameError, 0},
		{"api.example.org.", dnsmessage.RCodeRefused, 0},
	} {
		var m dnsmessage.Message
		if err := m.Unpack(s.Answer(query(t, tc.name, dnsmessage.TypeA))); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if m.Header.ID != 7 || !m.Header.Response || m.Header.RCode != tc.rcode || len(m.Answers) != tc.ips {
			t.Errorf("%s: got header %+v, %d answers; want rcode %v, %d answers", tc.name, m.Header, len(m.Answers), tc.rcode, tc.ips)
		}
		for _, a := range m.Answers {
			if a.Header.TTL != 2 || a.Body.(*dnsmessage.AResource).A != ip.As4() {
				t.Errorf("%s: answer %v", tc.name, a)
			}
		}
	}
	// A changed zone is served at once.
	if err := WriteZone(path, Zone{Origin: "example.com", Records: map[string]Record{}}); err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(s.Answer(query(t, "api.example.com.", dnsmessage.TypeA))); err != nil {
		t.Fatal(err)
	}
	if m.Header.RCode != dnsmessage.RCodeNameError {
		t.Errorf("after the change: rcode %v, want NXDOMAIN", m.Header.RCode)
	}
}

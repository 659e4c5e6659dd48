// Package worldhost is a host of the local cluster's outside world: an
// HTTP server that names itself, and an authoritative DNS server for a zone
// read from a file. `membrane dev up` runs them in network namespaces on
// the underlay, outside the cluster's ranges, so that DNS-aware policy has
// real names, real answers and real servers to work with.
package worldhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Zone is the authoritative data: A records by name.
type Zone struct {
	// Origin is the zone's name, e.g. "example.com."; questions for names
	// outside it are REFUSED.
	Origin  string            `json:"origin"`
	Records map[string]Record `json:"records"`
}

// Record is one name's A records.
type Record struct {
	IPs []netip.Addr `json:"ips"`
	TTL uint32       `json:"ttl"`
}

// Canonical makes a name lower case and fully qualified.
func Canonical(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// ReadZone reads a zone file.
func ReadZone(path string) (Zone, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Zone{}, fmt.Errorf("read zone: %w", err)
	}
	var z Zone
	if err := json.Unmarshal(raw, &z); err != nil {
		return Zone{}, fmt.Errorf("parse zone %s: %w", path, err)
	}
	z.Origin = Canonical(z.Origin)
	recs := make(map[string]Record, len(z.Records))
	for n, r := range z.Records {
		recs[Canonical(n)] = r
	}
	z.Records = recs
	return z, nil
}

// WriteZone replaces the zone file atomically: the server sees the old or
// the new zone, never a partial one.
func WriteZone(path string, z Zone) error {
	raw, err := json.MarshalIndent(z, "", "  ")
	if err != nil {
		return fmt.Errorf("encode zone: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		return fmt.Errorf("write zone: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write zone: %w", err)
	}
	return nil
}

// DNSServer answers A questions from the zone file, which it reads again
// whenever the file changes.
type DNSServer struct {
	log  *slog.Logger
	path string

	mu   sync.Mutex
	zone Zone
	file os.FileInfo // of the zone read: WriteZone's rename makes a new file
}

// NewDNSServer serves the zone file at path.
func NewDNSServer(log *slog.Logger, path string) (*DNSServer, error) {
	s := &DNSServer{log: log, path: path}
	if _, err := s.current(); err != nil {
		return nil, err
	}
	return s, nil
}

// current returns the zone, reading the file again if it changed. A file
// that cannot be read keeps the last zone.
func (s *DNSServer) current() (Zone, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.path)
	if err == nil && s.file != nil && os.SameFile(st, s.file) && st.ModTime().Equal(s.file.ModTime()) {
		return s.zone, nil
	}
	if err == nil {
		var z Zone
		if z, err = ReadZone(s.path); err == nil {
			s.zone, s.file = z, st
			return z, nil
		}
	}
	if s.zone.Records == nil {
		return Zone{}, err
	}
	s.log.Warn("zone file unreadable: serving the last zone", "error", err)
	return s.zone, nil
}

// Answer builds the response to one query; nil for what is not a query.
func (s *DNSServer) Answer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, OpCode: h.OpCode}
	zone, err := s.current()
	name := Canonical(q.Name.String())
	var answers []dnsmessage.AResource
	var ttl uint32
	switch {
	case err != nil:
		resp.RCode = dnsmessage.RCodeServerFailure
	case h.OpCode != 0:
		resp.RCode = dnsmessage.RCodeNotImplemented
	case name != zone.Origin && !strings.HasSuffix(name, "."+zone.Origin):
		resp.RCode, resp.Authoritative = dnsmessage.RCodeRefused, false
	default:
		rec, ok := zone.Records[name]
		if !ok {
			resp.RCode = dnsmessage.RCodeNameError
			break
		}
		ttl = rec.TTL
		if q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL {
			for _, ip := range rec.IPs {
				if ip.Is4() {
					answers = append(answers, dnsmessage.AResource{A: ip.As4()})
				}
			}
		}
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), resp)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil
	}
	if err := b.Question(q); err != nil {
		return nil
	}
	if err := b.StartAnswers(); err != nil {
		return nil
	}
	for _, a := range answers {
		if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}, a); err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// ServeUDP answers queries on conn until ctx is done.
func (s *DNSServer) ServeUDP(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	buf := make([]byte, 65535)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read dns query: %w", err)
		}
		if out := s.Answer(buf[:n]); out != nil {
			if _, err := conn.WriteTo(out, from); err != nil {
				s.log.Debug("write dns answer", "to", from, "error", err)
			}
		}
	}
}

// ServeTCP answers queries on l (two-byte length prefix) until ctx is done.
func (s *DNSServer) ServeTCP(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept dns connection: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			s.serveConn(c)
		}()
	}
}

func (s *DNSServer) serveConn(c net.Conn) {
	for {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var l [2]byte
		if _, err := ioReadFull(c, l[:]); err != nil {
			return
		}
		msg := make([]byte, int(l[0])<<8|int(l[1]))
		if _, err := ioReadFull(c, msg); err != nil {
			return
		}
		out := s.Answer(msg)
		if out == nil {
			return
		}
		if _, err := c.Write(append([]byte{byte(len(out) >> 8), byte(len(out))}, out...)); err != nil {
			return
		}
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// HTTPHandler answers every request with the host's name and address, so
// a client sees which host it reached.
func HTTPHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s\n", name, r.Host)
	})
}

// Config is one world host's servers.
type Config struct {
	Name string
	// HTTPAddr serves HTTPHandler over HTTP/1.1 and h2c, and Envoy's
	// external authorization service over gRPC (see authorization);
	// empty: none.
	HTTPAddr string
	// DNSAddr serves ZoneFile over UDP and TCP; empty: none.
	DNSAddr  string
	ZoneFile string
}

// Run serves c until ctx is done.
func Run(ctx context.Context, log *slog.Logger, c Config) error {
	if c.HTTPAddr == "" && c.DNSAddr == "" {
		return errors.New("nothing to serve: give --http-addr or --dns-addr")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	start := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	if c.HTTPAddr != "" {
		l, err := net.Listen("tcp", c.HTTPAddr)
		if err != nil {
			return fmt.Errorf("--http-addr %s: %w", c.HTTPAddr, err)
		}
		// HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge), which
		// gRPC clients such as Envoy's speak.
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		srv := &http.Server{Handler: withAuthorization(c.Name, HTTPHandler(c.Name)), Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
		start(func() error {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve http: %w", err)
			}
			return nil
		})
		start(func() error { <-ctx.Done(); return srv.Close() })
	}
	if c.DNSAddr != "" {
		dns, err := NewDNSServer(log, c.ZoneFile)
		if err != nil {
			return fmt.Errorf("--zone-file: %w", err)
		}
		pc, err := net.ListenPacket("udp", c.DNSAddr)
		if err != nil {
			return fmt.Errorf("--dns-addr %s: %w", c.DNSAddr, err)
		}
		l, err := net.Listen("tcp", c.DNSAddr)
		if err != nil {
			_ = pc.Close()
			return fmt.Errorf("--dns-addr %s: %w", c.DNSAddr, err)
		}
		start(func() error { return dns.ServeUDP(ctx, pc) })
		start(func() error { return dns.ServeTCP(ctx, l) })
	}
	log.Info("world host serving", "name", c.Name, "http", c.HTTPAddr, "dns", c.DNSAddr)
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

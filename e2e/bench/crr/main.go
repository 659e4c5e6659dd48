// Command crr is a TCP_CRR-style load generator: connect, send one small
// HTTP request, read the whole response, close; one connection after the
// other (or a fixed number of such loops in parallel). With -rr it is
// TCP_RR-style instead: each loop opens one connection per target and sends
// its requests over it, one after the other (Result's conns are then
// requests). It prints one JSON Result on stdout.
//
// It uses plain blocking socket system calls, so the client's own cost per
// connection is small and the same whatever the path to the server. Closing
// with SO_LINGER 0 (-close=rst, the default) sends a RST and leaves no
// TIME_WAIT socket on either side, so a reused source port never meets a
// lingering one on the server (PAWS drops and SYN retransmits).
//
// The benchmarks of package bench run it inside a pod's network namespace
// and cgroup:
//
//	crr -targets 10.96.0.12:8080 -duration 3s -warmup 500ms
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "crr:", err)
		os.Exit(1)
	}
}

// Config is what a run does.
type Config struct {
	Targets     []netip.AddrPort // connections go round-robin over these
	Duration    time.Duration    // measured time (the loop also stops at MaxConns)
	Warmup      time.Duration    // unmeasured time before
	MaxConns    int              // bound on measured connections
	Concurrency int              // parallel connect/request/close loops
	Close       string           // "rst" (SO_LINGER 0) or "fin" (plain close)
	Host        string           // Host header
	// RR: requests over established connections (one per loop and
	// target), not a connection each.
	RR bool
}

// Validate reports the first setting at fault.
func (c Config) Validate() error {
	switch {
	case len(c.Targets) == 0:
		return errors.New("-targets: at least one IPv4 address:port")
	case c.Duration <= 0 || c.Warmup < 0:
		return errors.New("-duration must be > 0 and -warmup >= 0")
	case c.MaxConns <= 0:
		return errors.New("-max must be > 0")
	case c.Concurrency < 1 || c.Concurrency > 64:
		return errors.New("-concurrency must be between 1 and 64")
	case c.Close != "rst" && c.Close != "fin":
		return errors.New(`-close must be "rst" or "fin"`)
	}
	for _, t := range c.Targets {
		if !t.Addr().Is4() {
			return fmt.Errorf("-targets: %s is not IPv4", t)
		}
	}
	return nil
}

// Result is what a run prints.
type Result struct {
	Conns      int     `json:"conns"`   // measured connections that completed
	Errors     int     `json:"errors"`  // measured connections that failed
	Seconds    float64 `json:"seconds"` // measured time
	Rate       float64 `json:"rate"`    // Conns / Seconds
	P50Micros  int     `json:"p50Micros"`
	P99Micros  int     `json:"p99Micros"`
	WarmConns  int     `json:"warmConns"`
	FirstError string  `json:"firstError,omitempty"`
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	targets := fs.String("targets", "", "comma-separated IPv4 address:port list, used round-robin")
	var c Config
	fs.DurationVar(&c.Duration, "duration", 3*time.Second, "measured time")
	fs.DurationVar(&c.Warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up time")
	fs.IntVar(&c.MaxConns, "max", 1_000_000, "bound on measured connections")
	fs.IntVar(&c.Concurrency, "concurrency", 1, "parallel loops")
	fs.StringVar(&c.Close, "close", "rst", `"rst": SO_LINGER 0, no TIME_WAIT anywhere; "fin": plain close`)
	fs.StringVar(&c.Host, "host", "bench", "Host header")
	fs.BoolVar(&c.RR, "rr", false, "requests over established connections (one per loop and target) instead of a connection each")
	if err := fs.Parse(args[1:]); err != nil {
		return Config{}, err
	}
	for _, t := range strings.Split(*targets, ",") {
		if t == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(t)
		if err != nil {
			return Config{}, fmt.Errorf("-targets: %w", err)
		}
		c.Targets = append(c.Targets, ap)
	}
	return c, c.Validate()
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	res := measure(ctx, cfg)
	if err := ctx.Err(); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// loopStats is one loop's share of the result.
type loopStats struct {
	conns, errors, warm int
	firstErr            error
	micros              []uint32
}

func measure(ctx context.Context, cfg Config) Result {
	req := []byte("GET / HTTP/1.1\r\nHost: " + cfg.Host + "\r\nUser-Agent: crr\r\n\r\n")
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	perLoop := (cfg.MaxConns + cfg.Concurrency - 1) / cfg.Concurrency

	stats := make([]loopStats, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[i]
			st.micros = make([]uint32, 0, min(perLoop, 1<<20))
			buf := make([]byte, 4096)
			conns := map[netip.AddrPort]int{} // -rr: this loop's connections
			defer func() {
				for _, fd := range conns {
					closeConn(fd, cfg.Close == "rst")
				}
			}()
			for n := i; ctx.Err() == nil; n++ {
				t0 := time.Now()
				if !t0.Before(end) || st.conns+st.errors >= perLoop {
					return
				}
				to := cfg.Targets[n%len(cfg.Targets)]
				var err error
				if cfg.RR {
					err = request(conns, to, req, buf, cfg.Close == "rst")
				} else {
					err = exchange(to, req, buf, cfg.Close == "rst")
				}
				if t0.Before(measureFrom) {
					st.warm++
					continue
				}
				if err != nil {
					st.errors++
					if st.firstErr == nil {
						st.firstErr = err
					}
					continue
				}
				st.conns++
				st.micros = append(st.micros, uint32(min(time.Since(t0).Microseconds(), 1<<32-1)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)

	var res Result
	var all []uint32
	for _, st := range stats {
		res.Conns += st.conns
		res.Errors += st.errors
		res.WarmConns += st.warm
		if st.firstErr != nil && res.FirstError == "" {
			res.FirstError = st.firstErr.Error()
		}
		all = append(all, st.micros...)
	}
	res.Seconds = elapsed.Seconds()
	if res.Seconds > 0 {
		res.Rate = float64(res.Conns) / res.Seconds
	}
	if len(all) > 0 {
		slices.Sort(all)
		res.P50Micros = int(all[len(all)/2])
		res.P99Micros = int(all[len(all)*99/100])
	}
	return res
}

// exchange does one connection: connect, request, read the response (by its
// Content-Length), close.
func exchange(to netip.AddrPort, req, buf []byte, rst bool) error {
	fd, err := dial(to)
	if err != nil {
		return err
	}
	defer closeConn(fd, rst)
	return roundTrip(fd, to, req, buf)
}

// request sends one request over the loop's connection to `to` (made
// first if there is none); a failed connection is closed and made anew
// next time.
func request(conns map[netip.AddrPort]int, to netip.AddrPort, req, buf []byte, rst bool) error {
	fd, ok := conns[to]
	if !ok {
		var err error
		if fd, err = dial(to); err != nil {
			return err
		}
		conns[to] = fd
	}
	if err := roundTrip(fd, to, req, buf); err != nil {
		closeConn(fd, rst)
		delete(conns, to)
		return err
	}
	return nil
}

func closeConn(fd int, rst bool) {
	if rst {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	_ = unix.Close(fd)
}

// dial connects a blocking socket with 2 s send and receive timeouts.
func dial(to netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// A lost SYN or a stuck server must not stall the loop for long.
	tv := unix.Timeval{Sec: 2}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())})
	if errors.Is(err, unix.EINTR) {
		// A signal (the Go runtime's preemption) interrupted the wait; the
		// handshake goes on.
		err = waitConnected(fd)
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", to, err)
	}
	return fd, nil
}

// roundTrip writes the request and reads the whole response (by its
// Content-Length).
func roundTrip(fd int, to netip.AddrPort, req, buf []byte) error {
	if _, err := retry(func() (int, error) { return unix.Write(fd, req) }); err != nil {
		return fmt.Errorf("write to %s: %w", to, err)
	}
	have := 0
	for {
		n, err := retry(func() (int, error) { return unix.Read(fd, buf[have:]) })
		if err != nil {
			return fmt.Errorf("read from %s: %w", to, err)
		}
		if n == 0 {
			return fmt.Errorf("read from %s: connection closed after %d bytes", to, have)
		}
		have += n
		done, err := complete(buf[:have])
		if err != nil {
			return fmt.Errorf("response from %s: %w", to, err)
		}
		if done {
			return nil
		}
		if have == len(buf) {
			return fmt.Errorf("response from %s: larger than %d bytes", to, len(buf))
		}
	}
}

// waitConnected waits for the handshake of a connect interrupted by a signal.
func waitConnected(fd int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, 2000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// retry repeats a system call interrupted by a signal.
func retry(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}

// complete reports whether b holds a whole 200 response with its body.
func complete(b []byte) (bool, error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return false, nil
	}
	lines := strings.Split(string(head), "\r\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.1 200 ") && !strings.HasPrefix(lines[0], "HTTP/1.0 200 ") {
		return false, fmt.Errorf("status %q", lines[0])
	}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return false, fmt.Errorf("Content-Length %q", v)
			}
			return len(body) >= n, nil
		}
	}
	return false, errors.New("no Content-Length")
}

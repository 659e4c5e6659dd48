package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// FlowEvent is one packet the policy programs reported: every drop, and
// forwarded packets as Options.Trace says.
type FlowEvent struct {
	Time       time.Time // wall clock, converted from the kernel's monotonic stamp
	Ifindex    int       // host-side interface
	EndpointID EndpointID
	Direction  Direction // relative to the endpoint
	Verdict    FlowVerdict
	DropReason DropReason // DropNone unless Dropped
	CTState    CTState
	// Match says which kind of policy entry allowed a new flow (MatchNone
	// when there was no lookup).
	Match PolicyMatch
	Proto Proto
	// Src and Dst carry ports for TCP, UDP and SCTP, 0 otherwise.
	Src, Dst                 netip.AddrPort
	SrcIdentity, DstIdentity Identity
	TCPFlags                 TCPFlags
	ICMPType, ICMPCode       uint8
	Length                   uint32 // bytes of the packet
	ProxyPort                uint16 // Redirected
}

func (e FlowEvent) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Direction, e.Verdict)
	if e.Verdict == Dropped {
		fmt.Fprintf(&b, " (%s)", e.DropReason)
	}
	if e.Verdict == Redirected {
		fmt.Fprintf(&b, " to proxy port %d", e.ProxyPort)
	}
	fmt.Fprintf(&b, " %s (ID:%s) -> %s (ID:%s) %s", endpointString(e.Src), e.SrcIdentity, endpointString(e.Dst), e.DstIdentity, e.Proto)
	switch {
	case e.Proto == TCP && e.TCPFlags != 0:
		fmt.Fprintf(&b, " %s", e.TCPFlags)
	case e.Proto == ICMP:
		fmt.Fprintf(&b, " type %d code %d", e.ICMPType, e.ICMPCode)
	}
	fmt.Fprintf(&b, " ct:%s", e.CTState)
	if e.Match != MatchNone {
		fmt.Fprintf(&b, " match:%s", e.Match)
	}
	fmt.Fprintf(&b, " ep %d if %d len %d", e.EndpointID, e.Ifindex, e.Length)
	return b.String()
}

func endpointString(ap netip.AddrPort) string {
	if ap.Port() == 0 {
		return ap.Addr().String()
	}
	return ap.String()
}

// EventReader reads the flow events ring buffer. Read belongs to one
// goroutine; Close may be called from any to end a blocked Read. There
// should be one reader per ring buffer: readers share, not copy, events.
//
// An idle reader waits to be woken: the programs wake it with the first
// event written after it caught up (the kernel's adaptive wake-up), so no
// traffic costs no wake-up at all. Once events come, Read hands out what
// is waiting, and when the ring buffer runs empty it sleeps
// EventsPollInterval before it looks again (the events meanwhile do not
// wake it): a busy datapath costs one wake-up per batch, not per event,
// and an event reaches the reader within EventsPollInterval.
type EventReader struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record
	// deadline is the caller's (zero: none).
	deadline time.Time
	// gathering: Read returned events since the reader last slept, so
	// more are likely; read counts them (the next sleep is shorter when
	// they filled much of the ring buffer).
	gathering bool
	read      int
	// closing ends a sleep when the reader is closed.
	closing   chan struct{}
	closeOnce sync.Once
	// clock converts the events' stamps; renewed every wallClockMaxAge
	// rather than per event (reading CLOCK_MONOTONIC is a system call).
	clock wallClock
}

// EventsPollInterval is how long a busy reader lets events gather in the
// ring buffer before it reads them (at most: it sleeps less when they
// filled more than an eighth of the ring buffer in that time).
const EventsPollInterval = 250 * time.Millisecond

// Events opens a reader on the flow events ring buffer. Events the ring
// buffer had no room for are counted in Counters().EventsLost.
func (m *Maps) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(m.events)
	if err != nil {
		return nil, fmt.Errorf("open flow events: %w", err)
	}
	return &EventReader{rd: rd, closing: make(chan struct{})}, nil
}

// ErrClosed is returned by Read after Close.
var ErrClosed = ringbuf.ErrClosed

// noWait is a deadline in the past: look without waiting.
var noWait = time.Unix(0, 1)

// Read waits for the next event, until the deadline (os.ErrDeadlineExceeded)
// or Close (ErrClosed).
func (r *EventReader) Read() (FlowEvent, error) {
	if err := r.next(); err != nil {
		return FlowEvent{}, fmt.Errorf("read flow event: %w", err)
	}
	if time.Since(r.clock.at) > wallClockMaxAge {
		r.clock = newWallClock()
	}
	ev, err := decodeEvent(r.rec.RawSample, r.clock.wall)
	if err != nil {
		return FlowEvent{}, fmt.Errorf("read flow event: %w", err)
	}
	return ev, nil
}

// next reads the next record into r.rec.
func (r *EventReader) next() error {
	for {
		// Gathering, look without waiting; idle, wait to be woken (or
		// the caller's deadline).
		wait := r.deadline
		if r.gathering {
			wait = noWait
		}
		r.rd.SetDeadline(wait)
		err := r.rd.ReadInto(&r.rec)
		switch {
		case err == nil:
			r.gathering = true
			r.read++
			return nil
		case !r.gathering || !errors.Is(err, os.ErrDeadlineExceeded):
			return err
		}
		// The ring buffer ran empty after events: let the next ones
		// gather, then wait for them (at once if they came meanwhile).
		sleep := EventsPollInterval
		// Room for them: if the last batch filled an eighth of the ring
		// buffer, sleep less.
		if eighth := r.rd.BufferSize() / (8 * eventRecordSize); r.read > eighth {
			sleep = EventsPollInterval * time.Duration(eighth) / time.Duration(r.read)
		}
		r.gathering, r.read = false, 0
		if err := r.sleep(sleep); err != nil {
			return err
		}
	}
}

// sleep waits d, until the caller's deadline at the latest, or until the
// reader is closed (ErrClosed).
func (r *EventReader) sleep(d time.Duration) error {
	if !r.deadline.IsZero() {
		d = min(d, time.Until(r.deadline))
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.closing:
		return ErrClosed
	}
}

// SetDeadline makes Read give up at t (zero: never).
func (r *EventReader) SetDeadline(t time.Time) { r.deadline = t }

// Close ends the reader; a blocked Read returns ErrClosed.
func (r *EventReader) Close() error {
	r.closeOnce.Do(func() { close(r.closing) })
	return r.rd.Close()
}

// Run calls fn with every event until ctx ends (returning nil) or reading
// fails. It closes the reader when it returns.
func (r *EventReader) Run(ctx context.Context, fn func(FlowEvent)) error {
	stop := context.AfterFunc(ctx, func() { _ = r.Close() })
	defer stop()
	defer r.Close()
	for {
		ev, err := r.Read()
		switch {
		case err == nil:
			fn(ev)
		case ctx.Err() != nil && errors.Is(err, ErrClosed):
			return nil
		default:
			return err
		}
	}
}

// eventSize is sizeof(struct flow_event).
const eventSize = 56

// eventRecordSize is what an event takes in the ring buffer: its 8-byte
// record header and the event, 8-byte aligned.
const eventRecordSize = 8 + (eventSize+7)&^7

// decodeEvent decodes a struct flow_event (layout checked against the
// generated policyFlowEvent by a test). wall converts a monotonic stamp.
func decodeEvent(b []byte, wall func(uint64) time.Time) (FlowEvent, error) {
	if len(b) < eventSize {
		return FlowEvent{}, fmt.Errorf("event of %d bytes, want %d", len(b), eventSize)
	}
	ne := binary.NativeEndian
	addr := func(off int) netip.Addr { return netip.AddrFrom4([4]byte(b[off : off+4])) }
	port := func(off int) uint16 { return binary.BigEndian.Uint16(b[off:]) }
	return FlowEvent{
		Time:        wall(ne.Uint64(b[0:])),
		Ifindex:     int(ne.Uint32(b[8:])),
		SrcIdentity: Identity(ne.Uint32(b[12:])),
		DstIdentity: Identity(ne.Uint32(b[16:])),
		Src:         netip.AddrPortFrom(addr(20), port(32)),
		Dst:         netip.AddrPortFrom(addr(24), port(34)),
		Length:      ne.Uint32(b[28:]),
		EndpointID:  EndpointID(ne.Uint16(b[36:])),
		ProxyPort:   ne.Uint16(b[38:]),
		Direction:   Direction(b[40]),
		Verdict:     FlowVerdict(b[41]),
		DropReason:  DropReason(b[42]),
		Proto:       Proto(b[43]),
		TCPFlags:    TCPFlags(b[44]),
		CTState:     CTState(b[45]),
		Match:       PolicyMatch(b[46]),
		ICMPType:    b[47],
		ICMPCode:    b[48],
	}, nil
}

// wallClock converts CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) to
// wall-clock time: the two clocks read together at one moment.
type wallClock struct {
	at   time.Time // wall clock (zero: never read)
	mono int64     // CLOCK_MONOTONIC at the same moment; -1: unreadable
}

// wallClockMaxAge is how long an EventReader uses one wallClock: the
// clocks drift apart only by NTP's slewing (at most 0.05%) meanwhile.
const wallClockMaxAge = time.Second

func newWallClock() wallClock {
	mono, err := monotonicNow()
	if err != nil {
		mono = -1
	}
	return wallClock{at: time.Now(), mono: mono}
}

func (c wallClock) wall(ns uint64) time.Time {
	if c.mono < 0 {
		return c.at
	}
	return c.at.Add(time.Duration(int64(ns) - c.mono))
}

// monotonicNow reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monotonicNow() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read monotonic clock: %w", err)
	}
	return ts.Nano(), nil
}

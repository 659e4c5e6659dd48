package socklb

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The clients run in a child process (this test binary re-executed) placed
// in the test cgroup at fork, so only the child is load-balanced. The child
// joins the test's network namespace before it opens any socket: a connect
// the datapath leaves alone then fails there for want of a route, and never
// leaves the machine.

const childEnv = "MEMBRANE_SOCKLB_TEST_CHILD"

func TestMain(m *testing.M) {
	if req := os.Getenv(childEnv); req != "" {
		os.Exit(runChild(req))
	}
	os.Exit(m.Run())
}

type childRequest struct {
	Netns   string // path of the network namespace to run in; required
	Mode    string // tcp, udp, udp-connected, tcp-loop
	Target  string // ip:port
	Count   int
	Timeout time.Duration
}

type attempt struct {
	Backend string        // the name the backend answered with
	Peer    string        // getpeername() (TCP, connected UDP) or recvfrom() source (UDP)
	Err     string        // empty on success
	Errno   int           // syscall errno of Err, if any
	Elapsed time.Duration // of the connect (TCP) or the whole exchange (UDP)
}

type childResult struct {
	Attempts []attempt
	OK       int      // tcp-loop
	Failed   int      // tcp-loop
	Errors   []string // tcp-loop: the first few
}

func runChild(raw string) int {
	var req childRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintln(os.Stderr, "child: bad request:", err)
		return 2
	}
	if err := enterNetns(req.Netns); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	var res childResult
	switch req.Mode {
	case "tcp":
		for range req.Count {
			res.Attempts = append(res.Attempts, tcpAttempt(req.Target, req.Timeout))
		}
	case "udp":
		for range req.Count {
			res.Attempts = append(res.Attempts, udpAttempt(req.Target, req.Timeout))
		}
	case "udp-connected":
		for range req.Count {
			res.Attempts = append(res.Attempts, udpConnectedAttempt(req.Target, req.Timeout))
		}
	case "tcp-loop":
		res = tcpLoop(req.Target, req.Timeout)
	default:
		fmt.Fprintln(os.Stderr, "child: unknown mode", req.Mode)
		return 2
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// enterNetns moves the calling goroutine's thread into the network namespace
// at path and keeps the goroutine locked to it for the rest of the process:
// every socket the child opens is opened on this goroutine, so in path. New
// runtime threads are cloned from a clean template thread and stay outside.
func enterNetns(path string) error {
	if path == "" {
		return errors.New("no netns given: refusing to run in the root network namespace")
	}
	runtime.LockOSThread() // never unlocked: the thread dies with the process
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	var want, got unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &want); err != nil {
		return fmt.Errorf("stat netns %s: %w", path, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &got); err != nil {
		return fmt.Errorf("stat own netns: %w", err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return fmt.Errorf("thread is in netns %d, not %s (%d)", got.Ino, path, want.Ino)
	}
	return nil
}

func failed(a attempt, start time.Time, err error) attempt {
	a.Err = err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		a.Errno = int(errno)
	}
	if a.Elapsed == 0 {
		a.Elapsed = time.Since(start)
	}
	return a
}

func tcpAttempt(target string, timeout time.Duration) attempt {
	var a attempt
	start := time.Now()
	c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp4", target)
	a.Elapsed = time.Since(start)
	if err != nil {
		return failed(a, start, err)
	}
	defer c.Close()
	if a.Peer, err = peerName(c.(syscall.Conn)); err != nil {
		return failed(a, start, err)
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return failed(a, start, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return failed(a, start, fmt.Errorf("read backend name: %w", err))
	}
	a.Backend = strings.TrimSpace(line)
	return a
}

func udpAttempt(target string, timeout time.Duration) attempt {
	var a attempt
	start := time.Now()
	dst, err := net.ResolveUDPAddr("udp4", target)
	if err != nil {
		return failed(a, start, err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero}) // unconnected: sendmsg4 + recvmsg4
	if err != nil {
		return failed(a, start, err)
	}
	defer pc.Close()
	if err := pc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return failed(a, start, err)
	}
	if _, err := pc.WriteToUDP([]byte("ping"), dst); err != nil {
		return failed(a, start, err)
	}
	buf := make([]byte, 64)
	n, from, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		return failed(a, start, err)
	}
	a.Elapsed = time.Since(start)
	a.Backend, a.Peer = string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()).String()
	return a
}

func udpConnectedAttempt(target string, timeout time.Duration) attempt {
	var a attempt
	start := time.Now()
	c, err := net.Dial("udp4", target) // connect4 + getpeername4
	if err != nil {
		return failed(a, start, err)
	}
	defer c.Close()
	if a.Peer, err = peerName(c.(syscall.Conn)); err != nil {
		return failed(a, start, err)
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return failed(a, start, err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return failed(a, start, err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return failed(a, start, err)
	}
	a.Elapsed = time.Since(start)
	a.Backend = string(buf[:n])
	return a
}

// peerName asks the kernel directly (getpeername(2)), so the getpeername4
// hook decides what it returns.
func peerName(c syscall.Conn) (string, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var (
		sa    unix.Sockaddr
		saErr error
	)
	if err := raw.Control(func(fd uintptr) { sa, saErr = unix.Getpeername(int(fd)) }); err != nil {
		return "", err
	}
	if saErr != nil {
		return "", fmt.Errorf("getpeername: %w", saErr)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return "", fmt.Errorf("getpeername: unexpected %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String(), nil
}

// tcpLoop connects again and again until stdin closes.
func tcpLoop(target string, timeout time.Duration) childResult {
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	var res childResult
	for {
		select {
		case <-stop:
			return res
		default:
		}
		a := tcpAttempt(target, timeout)
		if a.Err == "" {
			res.OK++
			continue
		}
		res.Failed++
		if len(res.Errors) < 10 {
			res.Errors = append(res.Errors, a.Err)
		}
	}
}

// runClient runs one child to completion in the env's cgroup and netns.
func (e *testEnv) runClient(t *testing.T, req childRequest) childResult {
	t.Helper()
	cmd := e.clientCmd(t, req)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("client %s: %v\nstderr: %s", req.Mode, err, stderr.String())
	}
	return decodeResult(t, stdout.String())
}

// loopClient is a running tcp-loop child.
type loopClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout strings.Builder
	stderr strings.Builder
	once   sync.Once
}

func (e *testEnv) startLoopClient(t *testing.T, target string) *loopClient {
	t.Helper()
	cmd := e.clientCmd(t, childRequest{Mode: "tcp-loop", Target: target, Timeout: 2 * time.Second})
	lc := &loopClient{cmd: cmd}
	cmd.Stdout, cmd.Stderr = &lc.stdout, &lc.stderr
	var err error
	if lc.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start loop client: %v", err)
	}
	t.Cleanup(func() { lc.once.Do(func() { lc.stdin.Close(); _ = cmd.Wait() }) })
	return lc
}

func (lc *loopClient) stop(t *testing.T) childResult {
	t.Helper()
	var err error
	lc.once.Do(func() {
		lc.stdin.Close()
		err = lc.cmd.Wait()
	})
	if err != nil {
		t.Fatalf("loop client: %v\nstderr: %s", err, lc.stderr.String())
	}
	return decodeResult(t, lc.stdout.String())
}

func (e *testEnv) clientCmd(t *testing.T, req childRequest) *exec.Cmd {
	t.Helper()
	req.Netns = e.netns
	raw, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(e.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cg.Close() })
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	// clone3(CLONE_INTO_CGROUP): the child is in the cgroup from its first instruction.
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	return cmd
}

func decodeResult(t *testing.T, out string) childResult {
	t.Helper()
	var res childResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("decode client output %q: %v", out, err)
	}
	return res
}

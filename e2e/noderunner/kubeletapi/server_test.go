package kubeletapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	clientexec "k8s.io/client-go/util/exec"

	"github.com/membrane-mesh/membrane/e2e/pki"
)

// fakePods has one pod, default/web, with containers "app" and "side".
type fakePods struct {
	dir  string
	mu   sync.Mutex
	done chan struct{} // of app's current instance
}

func (p *fakePods) LogPath(ns, pod, container string, previous bool) (string, <-chan struct{}, error) {
	if ns != "default" || pod != "web" || (container != "app" && container != "side") {
		return "", nil, fmt.Errorf("container %q of pod %s/%s: %w", container, ns, pod, ErrNotFound)
	}
	if previous {
		return filepath.Join(p.dir, container+"-previous.log"), nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return filepath.Join(p.dir, container+".log"), p.done, nil
}

func (p *fakePods) Exec(ctx context.Context, ns, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (int, error) {
	if ns != "default" || pod != "web" || container != "app" {
		return -1, fmt.Errorf("container %q of pod %s/%s: %w", container, ns, pod, ErrNotFound)
	}
	switch argv[0] {
	case "echo":
		fmt.Fprint(stdout, strings.Join(argv[1:], " "))
		fmt.Fprint(stderr, "to stderr")
		return 0, nil
	case "fail":
		fmt.Fprint(stderr, "failing")
		return strconv.Atoi(argv[1])
	case "cat":
		_, err := io.Copy(stdout, stdin)
		return 0, err
	case "tty":
		fmt.Fprintf(stdout, "tty=%t stderr=%t", tty, stderr != nil)
		return 0, nil
	}
	return 127, nil
}

// testEnv is a running server and the TLS material to reach it.
type testEnv struct {
	addr   string
	pods   *fakePods
	client *rest.Config // with the client certificate
	ca     *pki.CA
}

func tlsCert(t *testing.T, ca *pki.CA, r pki.Request) (tls.Certificate, []byte, []byte) {
	t.Helper()
	cert, key, err := ca.Issue(r)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, pki.CertPEM(cert), keyPEM
}

func startServer(t *testing.T) *testEnv {
	t.Helper()
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, _, _ := tlsCert(t, ca, pki.Request{CommonName: "node-1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	_, certPEM, keyPEM := tlsCert(t, ca, pki.Request{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	pods := &fakePods{dir: t.TempDir(), done: make(chan struct{})}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := NewServer(logger, "unused", serving, pool, pods)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return &testEnv{
		addr: ln.Addr().String(),
		pods: pods,
		ca:   ca,
		client: &rest.Config{
			Host:            "https://" + ln.Addr().String(),
			TLSClientConfig: rest.TLSClientConfig{CertData: certPEM, KeyData: keyPEM, CAData: pki.CertPEM(ca.Cert)},
		},
	}
}

func (e *testEnv) httpClient(t *testing.T) *http.Client {
	t.Helper()
	rt, err := rest.TransportFor(e.client)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: rt, Timeout: 20 * time.Second}
}

func (e *testEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := e.httpClient(t).Get("https://" + e.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

const appLog = `2024-01-01T00:00:01.000000001Z stdout F one
2024-01-01T00:00:02Z stderr F two
garbage line
2024-01-01T00:00:03Z stdout P thr
2024-01-01T00:00:03.5Z stdout F ee
2024-01-01T00:00:04Z stdout F four
`

func TestContainerLogs(t *testing.T) {
	e := startServer(t)
	if err := os.WriteFile(filepath.Join(e.pods.dir, "app.log"), []byte(appLog), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.pods.dir, "app-previous.log"), []byte("2024-01-01T00:00:00Z stdout F before restart\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query  string
		status int
		body   string
	}{
		{"", 200, "one\ntwo\nthree\nfour\n"},
		{"?tailLines=2", 200, "three\nfour\n"},
		{"?tailLines=0", 200, ""},
		{"?tailLines=100", 200, "one\ntwo\nthree\nfour\n"},
		{"?tail=1", 200, "four\n"},
		{"?tail=all", 200, "one\ntwo\nthree\nfour\n"},
		{"?tailLines=2&timestamps=true", 200,
			"2024-01-01T00:00:03.000000000Z three\n2024-01-01T00:00:04.000000000Z four\n"},
		{"?timestamps=true&tailLines=3&stream=Stdout", 200,
			"2024-01-01T00:00:01.000000001Z one\n2024-01-01T00:00:03.000000000Z three\n2024-01-01T00:00:04.000000000Z four\n"},
		{"?limitBytes=6", 200, "one\ntw"},
		{"?stream=Stderr", 200, "two\n"},
		{"?sinceTime=2024-01-01T00:00:02Z", 200, "two\nthree\nfour\n"},
		{"?previous=true", 200, "before restart\n"},
		{"?sinceSeconds=1", 200, ""},
		{"?tailLines=-1", 422, ""},
		{"?limitBytes=0", 422, ""},
		{"?sinceSeconds=5&sinceTime=2024-01-01T00:00:02Z", 422, ""},
		{"?follow=maybe", 400, ""},
		{"?stream=Both", 400, ""},
	} {
		status, body := e.get(t, "/containerLogs/default/web/app"+tc.query)
		if status != tc.status || (status == 200 && body != tc.body) {
			t.Errorf("logs%s = %d %q, want %d %q", tc.query, status, body, tc.status, tc.body)
		}
	}
	for _, path := range []string{
		"/containerLogs/default/web/nope",
		"/containerLogs/default/gone/app",
		"/containerLogs/default/web/side", // no log file yet
		"/containerLogs/default/web",
		"/pods",
	} {
		if status, body := e.get(t, path); status != 404 {
			t.Errorf("%s = %d %q, want 404", path, status, body)
		}
	}
	if status, body := e.get(t, "/healthz"); status != 200 || body != "ok" {
		t.Errorf("healthz = %d %q", status, body)
	}
}

func TestContainerLogsFollow(t *testing.T) {
	e := startServer(t)
	path := filepath.Join(e.pods.dir, "app.log")
	if err := os.WriteFile(path, []byte(appLog), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := e.httpClient(t).Get("https://" + e.addr + "/containerLogs/default/web/app?follow=true&tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				readErr <- err
				close(lines)
				return
			}
			lines <- line
		}
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("followed line %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no line %q while following", want)
		}
	}
	appendLog := func(s string) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	expect("four\n")
	appendLog("2024-01-01T00:00:05Z stdout F five\n2024-01-01T00:00:06Z stderr P si")
	expect("five\n")
	appendLog("\n2024-01-01T00:00:07Z stderr F x\n") // completes the record, then the line
	expect("six\n")
	// The container writes a last line and exits: the stream ends after
	// the rest. (Written before the exit: a line written after it may
	// rightly never be followed.)
	appendLog("2024-01-01T00:00:08Z stdout F last\n")
	close(e.pods.done)
	expect("last\n")
	select {
	case _, ok := <-lines:
		if ok {
			t.Fatal("more lines after the container exited")
		}
		if err := <-readErr; !errors.Is(err, io.EOF) {
			t.Errorf("follow ended with %v, want EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after the container exited")
	}
}

func TestContainerLogsFollowClientGone(t *testing.T) {
	e := startServer(t)
	if err := os.WriteFile(filepath.Join(e.pods.dir, "app.log"), []byte(appLog), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+e.addr+"/containerLogs/default/web/app?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.httpClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "one\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	// The server's cleanup fails the test if the handler does not end.
}

func (e *testEnv) execURL(t *testing.T, container string, query string) *url.URL {
	t.Helper()
	u, err := url.Parse("https://" + e.addr + "/exec/default/web/" + container + "?" + query)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestExec(t *testing.T) {
	e := startServer(t)

	type executorFor func(u *url.URL) (remotecommand.Executor, error)
	for name, newExecutor := range map[string]executorFor{
		"spdy": func(u *url.URL) (remotecommand.Executor, error) {
			return remotecommand.NewSPDYExecutor(e.client, "POST", u)
		},
		"websocket v4": func(u *url.URL) (remotecommand.Executor, error) {
			return remotecommand.NewWebSocketExecutorForProtocols(e.client, "GET", u.String(), "v4.channel.k8s.io")
		},
	} {
		t.Run(name, func(t *testing.T) {
			run := func(query string, opts remotecommand.StreamOptions) error {
				t.Helper()
				ex, err := newExecutor(e.execURL(t, "app", query))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return ex.StreamWithContext(ctx, opts)
			}
			var stdout, stderr strings.Builder
			err := run("command=echo&command=hello&command=world&output=1&error=1",
				remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
			if err != nil || stdout.String() != "hello world" || stderr.String() != "to stderr" {
				t.Errorf("echo = %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
			}

			stdout.Reset()
			stderr.Reset()
			err = run("command=fail&command=3&output=1&error=1",
				remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
			var exitErr clientexec.CodeExitError // what kubectl exits with
			if !errors.As(err, &exitErr) || exitErr.Code != 3 {
				t.Errorf("fail 3 = %v (%T), want CodeExitError with code 3", err, err)
			}
			if stderr.String() != "failing" {
				t.Errorf("fail 3: stderr %q", stderr.String())
			}

			if name == "spdy" { // WebSocket before v5 cannot signal the end of stdin
				stdout.Reset()
				err = run("command=cat&input=1&output=1",
					remotecommand.StreamOptions{Stdin: strings.NewReader("piped in"), Stdout: &stdout})
				if err != nil || stdout.String() != "piped in" {
					t.Errorf("cat = %v, %q", err, stdout.String())
				}
			}

			stdout.Reset()
			err = run("command=tty&output=1&tty=1", remotecommand.StreamOptions{Stdout: &stdout, Tty: true})
			if err != nil || stdout.String() != "tty=true stderr=false" {
				t.Errorf("tty = %v, %q", err, stdout.String())
			}
		})
	}

	ex, err := remotecommand.NewSPDYExecutor(e.client, "POST", e.execURL(t, "nope", "command=echo&output=1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout strings.Builder
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("exec in a missing container = %v, want a not found error", err)
	}
	for _, query := range []string{"command=echo", "output=1"} {
		resp, err := e.httpClient(t).Post(e.execURL(t, "app", query).String(), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("exec?%s = %d, want 400", query, resp.StatusCode)
		}
	}
}

func TestClientCertificateRequired(t *testing.T) {
	e := startServer(t)
	roots := x509.NewCertPool()
	roots.AddCert(e.ca.Cert)
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	if resp, err := noCert.Get("https://" + e.addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("request without a client certificate answered %d", resp.StatusCode)
	}

	otherCA, err := pki.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _ := tlsCert(t, otherCA, pki.Request{CommonName: "intruder", Client: true})
	wrongCA := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{foreign}},
	}}
	if resp, err := wrongCA.Get("https://" + e.addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("request with a certificate of another CA answered %d", resp.StatusCode)
	}

	if status, _ := e.get(t, "/healthz"); status != 200 {
		t.Errorf("healthz with the client certificate = %d", status)
	}
}

func TestTailOffset(t *testing.T) {
	f := strings.NewReader(appLog)
	all := logOptions{stdout: true, stderr: true}
	for n, want := range map[int64]int64{0: int64(len(appLog)), 1: int64(strings.Index(appLog, "2024-01-01T00:00:04Z")),
		2: int64(strings.Index(appLog, "2024-01-01T00:00:03Z")), 9: 0} {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if got, err := tailOffset(f, n, all); err != nil || got != want {
			t.Errorf("tailOffset(%d) = %d, %v; want %d", n, got, err, want)
		}
	}
}

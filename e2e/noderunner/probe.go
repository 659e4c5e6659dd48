package noderunner

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// execFunc runs a command in a container and returns its exit code.
type execFunc func(ctx context.Context, argv []string, stdout, stderr io.Writer) (int, error)

// probeOnce runs one probe against a container of a pod at ip; it returns
// nil on success and an error saying why not.
func probeOnce(ctx context.Context, p *corev1.Probe, c *corev1.Container, ip string, exec execFunc) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		return probeHTTP(ctx, p.HTTPGet, c, ip)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := ip
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("tcp probe: %w", err)
		}
		return conn.Close()
	case p.Exec != nil:
		var out bytes.Buffer
		code, err := exec(ctx, p.Exec.Command, &out, &out)
		if err != nil {
			return fmt.Errorf("exec probe: %w", err)
		}
		if code != 0 {
			return fmt.Errorf("exec probe: command exited %d: %s", code, bytes.TrimSpace(out.Bytes()))
		}
		return nil
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported by the local node runner")
	}
	return fmt.Errorf("probe has no handler")
}

func probeHTTP(ctx context.Context, h *corev1.HTTPGetAction, c *corev1.Container, ip string) error {
	port, err := resolvePort(h.Port, c)
	if err != nil {
		return err
	}
	host := ip
	if h.Host != "" {
		host = h.Host
	}
	scheme := "http"
	if h.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: h.Path}
	if u.Path == "" {
		u.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	req.Header.Set("User-Agent", "kube-probe/1.34")
	for _, hd := range h.HTTPHeaders {
		if hd.Name == "Host" {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} // #nosec G402 -- kubelet probes do not verify certificates either
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http probe: %s returned %d", u.String(), resp.StatusCode)
	}
	return nil
}

// resolvePort turns a numeric or named port into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("probe port %q: no container port of that name", p.StrVal)
}

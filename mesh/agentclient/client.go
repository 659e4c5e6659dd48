// Package agentclient reaches node agents' APIs as a cluster user: through
// the API server's node proxy (the user needs nodes/proxy get there), a
// tunnel to the agent (package agenttunnel), TLS pinned to the certificate
// the agent publishes on its Node, and the user's own credentials inside:
// the kubeconfig's client certificate, else its bearer token. The agent
// authorizes the user again (nodes/proxy get to read, create to change).
//
// It imports no datapath code, so the CLI can use it.
package agentclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/membrane-mesh/membrane/mesh/agenttunnel"
)

// DefaultPort is where membrane-agent serves on each node.
const DefaultPort = 9890

// Client reaches the agents of one cluster.
type Client struct {
	kube kubernetes.Interface
	port int
	// toAPIServer speaks HTTP/1.1 to the API server with the user's
	// credentials (upgrades do not pass over HTTP/2).
	toAPIServer http.RoundTripper
	// clientCert presents the user's certificate to the agent; nil
	// without one.
	clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// inside adds the user's bearer token to requests to the agent (when
	// the user has no static client certificate).
	inside func(http.RoundTripper) (http.RoundTripper, error)

	mu   sync.Mutex
	pins map[string]string // node → fingerprint
}

// New returns a client for the cluster of cfg reaching agents on port.
func New(cfg *rest.Config, port int) (*Client, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	tc, err := cfg.TransportConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes credentials: %w", err)
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes TLS configuration: %w", err)
	}
	base := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: 10 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	if cfg.Proxy != nil {
		base.Proxy = cfg.Proxy
	}
	if cfg.Dial != nil {
		base.DialContext = cfg.Dial
	}
	if tlsCfg != nil {
		tlsCfg = tlsCfg.Clone()
		tlsCfg.NextProtos = []string{"http/1.1"}
		base.TLSClientConfig = tlsCfg
	}
	toAPIServer, err := rest.HTTPWrappersForConfig(cfg, base)
	if err != nil {
		return nil, fmt.Errorf("kubernetes credentials: %w", err)
	}
	c := &Client{kube: kube, port: port, toAPIServer: toAPIServer, pins: map[string]string{}}
	if (tc.HasCertAuth() || tc.HasCertCallback()) && tlsCfg != nil {
		c.clientCert = tlsCfg.GetClientCertificate
	}
	if !tc.HasCertAuth() {
		// Only what authenticates the user: no impersonation, no basic
		// auth (the agent knows neither).
		inner := rest.CopyConfig(cfg)
		inner.Impersonate = rest.ImpersonationConfig{}
		inner.Username, inner.Password = "", ""
		c.inside = func(rt http.RoundTripper) (http.RoundTripper, error) { return rest.HTTPWrappersForConfig(inner, rt) }
	}
	return c, nil
}

// Kubernetes is the client of the API server the agents are reached
// through.
func (c *Client) Kubernetes() kubernetes.Interface { return c.kube }

// StatusError is an agent's answer other than 2xx.
type StatusError struct {
	Node    string
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("node %s: agent answered %d: %s", e.Node, e.Status, msg)
}

// Do sends one request to node's agent and returns its answer (any
// status); path may carry no query: pass query. Close the body.
func (c *Client) Do(ctx context.Context, node, method, path string, query url.Values) (*http.Response, error) {
	pin, err := c.pin(ctx, node, false)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, node, pin, method, path, query)
	if errors.Is(err, agenttunnel.ErrCertMismatch) {
		// The agent restarted with a new certificate since we read it.
		if pin, err = c.pin(ctx, node, true); err != nil {
			return nil, err
		}
		resp, err = c.do(ctx, node, pin, method, path, query)
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: agent did not answer: %w", node, err)
	}
	return resp, nil
}

// Stream GETs path from node's agent and returns the body of a 2xx answer,
// to read as it comes; other answers are a *StatusError.
func (c *Client) Stream(ctx context.Context, node, path string, query url.Values) (io.ReadCloser, error) {
	resp, err := c.Do(ctx, node, http.MethodGet, path, query)
	if err != nil {
		return nil, err
	}
	if err := checkStatus(node, resp); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// JSON sends method path to node's agent and decodes a 2xx answer into out;
// other answers are a *StatusError.
func (c *Client) JSON(ctx context.Context, node, method, path string, out any) error {
	resp, err := c.Do(ctx, node, method, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(node, resp); err != nil {
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("node %s: decode agent answer: %w", node, err)
	}
	return nil
}

func checkStatus(node string, resp *http.Response) error {
	if resp.StatusCode/100 == 2 {
		return nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &StatusError{Node: node, Status: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
}

func (c *Client) do(ctx context.Context, node, pin, method, path string, query url.Values) (*http.Response, error) {
	tunnelURL := c.kube.CoreV1().RESTClient().Get().
		Resource("nodes").Name(node + ":" + strconv.Itoa(c.port)).SubResource("proxy").Suffix(agenttunnel.Path).
		URL().String()
	tr := &http.Transport{
		// One request per tunnel: the tunnel closes with the answer.
		DisableKeepAlives: true,
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := agenttunnel.Open(ctx, c.toAPIServer, tunnelURL)
			if err != nil {
				return nil, refusalHint(err)
			}
			tc := tls.Client(conn, agenttunnel.PinnedConfig(pin, c.clientCert))
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("TLS to the agent: %w", err)
			}
			return tc, nil
		},
	}
	var rt http.RoundTripper = tr
	if c.inside != nil {
		var err error
		if rt, err = c.inside(tr); err != nil {
			return nil, fmt.Errorf("credentials for the agent: %w", err)
		}
	}
	u := url.URL{Scheme: "https", Host: "agent", Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	return rt.RoundTrip(req)
}

// refusalHint explains the API server's usual refusals.
func refusalHint(err error) error {
	var refused *agenttunnel.RefusedError
	if errors.As(err, &refused) && refused.Status == http.StatusForbidden {
		return fmt.Errorf("%w (reaching agents needs get and create on nodes/proxy)", err)
	}
	return err
}

// pin is the fingerprint node's agent publishes; fresh reads it again.
func (c *Client) pin(ctx context.Context, node string, fresh bool) (string, error) {
	c.mu.Lock()
	pin, ok := c.pins[node]
	c.mu.Unlock()
	if ok && !fresh {
		return pin, nil
	}
	n, err := c.kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("node %s: %w", node, err)
	}
	pin = n.Annotations[agenttunnel.CertAnnotation]
	if pin == "" {
		return "", fmt.Errorf("node %s: its agent has not published its API certificate (annotation %s): is membrane-agent running there?", node, agenttunnel.CertAnnotation)
	}
	c.mu.Lock()
	c.pins[node] = pin
	c.mu.Unlock()
	return pin, nil
}

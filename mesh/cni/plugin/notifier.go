package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/mesh/agentapi"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// Endpoint is what the node agent learns about a pod interface.
type Endpoint struct {
	ContainerID  string
	IfName       string
	Netns        string
	PodNamespace string
	PodName      string
	IP           netip.Addr
	HostIfName   string
	HostIfIndex  int
	HostMAC      net.HardwareAddr
	PodMAC       net.HardwareAddr
}

// Notifier tells the node agent about endpoints. EndpointAdded runs at the
// end of a successful ADD, and its error fails the ADD (the pod would run
// without policy otherwise). EndpointDeleted runs during DEL, and its error is
// only logged: DEL must not fail, and the agent reconciles from the cluster
// anyway. On DEL the Endpoint carries only what is still known (IDs, netns,
// host interface name, the released IP).
type Notifier interface {
	EndpointAdded(ctx context.Context, ep Endpoint) error
	EndpointDeleted(ctx context.Context, ep Endpoint) error
}

// NopNotifier tells no one.
type NopNotifier struct{}

// EndpointAdded does nothing.
func (NopNotifier) EndpointAdded(context.Context, Endpoint) error { return nil }

// EndpointDeleted does nothing.
func (NopNotifier) EndpointDeleted(context.Context, Endpoint) error { return nil }

// NotifierFor returns the Notifier that cfg asks for: NopNotifier when
// agentSocket is empty, else an AgentNotifier.
func NotifierFor(cfg netconf.Config) (Notifier, error) {
	if cfg.AgentSocket == "" {
		return NopNotifier{}, nil
	}
	if !filepath.IsAbs(cfg.AgentSocket) {
		return nil, fmt.Errorf("agentSocket %q: must be an absolute path", cfg.AgentSocket)
	}
	return AgentNotifier{Socket: cfg.AgentSocket}, nil
}

// agentTimeout bounds the wait for the agent (it answers within 10 s).
const agentTimeout = 15 * time.Second

// AgentNotifier tells the node agent on its root-only API socket. On ADD
// the agent puts the interface into the policy datapath (with the init
// identity until the pod's policy is written) before it answers: the ADD
// fails when it cannot, rather than leave the pod unpoliced.
type AgentNotifier struct {
	Socket string
}

// EndpointAdded posts the endpoint to the agent and waits for its answer.
func (n AgentNotifier) EndpointAdded(ctx context.Context, ep Endpoint) error {
	body, err := json.Marshal(agentapi.CNIEndpoint{
		Namespace: ep.PodNamespace, Pod: ep.PodName, ContainerID: ep.ContainerID,
		IP: ep.IP, Ifindex: ep.HostIfIndex, HostMAC: macString(ep.HostMAC), PodMAC: macString(ep.PodMAC),
	})
	if err != nil {
		return fmt.Errorf("encode endpoint: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+agentapi.PathCNIEndpoints, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.Socket)
		},
	}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("agent at %s: %w", n.Socket, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent at %s: %s: %s", n.Socket, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// EndpointDeleted does nothing: the agent forgets an interface once it is
// gone.
func (AgentNotifier) EndpointDeleted(context.Context, Endpoint) error { return nil }

func macString(m net.HardwareAddr) string {
	if len(m) == 0 {
		return ""
	}
	return m.String()
}

package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
	"github.com/membrane-mesh/membrane/mesh/cni/nstest"
	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// recorder is a Notifier that records calls and can fail EndpointAdded.
type recorder struct {
	added, deleted []Endpoint
	failAdd        error
}

func (r *recorder) EndpointAdded(_ context.Context, ep Endpoint) error {
	r.added = append(r.added, ep)
	return r.failAdd
}

func (r *recorder) EndpointDeleted(_ context.Context, ep Endpoint) error {
	r.deleted = append(r.deleted, ep)
	return nil
}

func newTestPlugin(r *recorder) *Plugin {
	return New(Options{Notifier: func(netconf.Config) (Notifier, error) { return r, nil }})
}

func cmdArgs(t *testing.T, dataDir, netns string) *skel.CmdArgs {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"membrane","type":"membrane-cni","podCIDR":"10.244.1.0/24","dataDir":%q}`, dataDir)
	return &skel.CmdArgs{
		ContainerID: "c1",
		Netns:       netns,
		IfName:      "eth0",
		Args:        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
		StdinData:   []byte(conf),
	}
}

func TestPodRef(t *testing.T) {
	ns, name := podRef("IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_INFRA_CONTAINER_ID=abc")
	if ns != "kube-system" || name != "coredns-1" {
		t.Errorf("podRef = %q, %q", ns, name)
	}
	if ns, name := podRef(""); ns != "" || name != "" {
		t.Errorf("podRef(\"\") = %q, %q", ns, name)
	}
}

func TestNotifierFor(t *testing.T) {
	n, err := NotifierFor(netconf.Config{})
	if err != nil || n != (NopNotifier{}) {
		t.Errorf("NotifierFor(no agentSocket) = %v, %v; want NopNotifier", n, err)
	}
	if n, err := NotifierFor(netconf.Config{AgentSocket: "/run/membrane/agent.sock"}); err != nil || n != (AgentNotifier{Socket: "/run/membrane/agent.sock"}) {
		t.Errorf("NotifierFor(agentSocket) = %v, %v; want AgentNotifier", n, err)
	}
	if _, err := NotifierFor(netconf.Config{AgentSocket: "agent.sock"}); err == nil {
		t.Error("NotifierFor(relative agentSocket) = nil error, want error")
	}
}

func TestAgentNotifier(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var got agentapi.CNIEndpoint
	status := http.StatusOK
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != agentapi.PathCNIEndpoints {
			http.NotFound(w, r)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		if status != http.StatusOK {
			http.Error(w, "not ready", status)
			return
		}
		_, _ = w.Write([]byte(`{"id":3,"identity":5}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	n := AgentNotifier{Socket: sock}
	ep := Endpoint{ContainerID: "c1", PodNamespace: "ns", PodName: "p", IP: netip.MustParseAddr("10.244.0.9"), HostIfIndex: 42}
	if err := n.EndpointAdded(t.Context(), ep); err != nil {
		t.Fatalf("EndpointAdded: %v", err)
	}
	want := agentapi.CNIEndpoint{Namespace: "ns", Pod: "p", ContainerID: "c1", IP: ep.IP, Ifindex: 42}
	if got != want {
		t.Errorf("agent got %+v, want %+v", got, want)
	}
	status = http.StatusServiceUnavailable
	if err := n.EndpointAdded(t.Context(), ep); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("EndpointAdded with the agent failing: %v, want an error naming 503", err)
	}
	if err := (AgentNotifier{Socket: filepath.Join(t.TempDir(), "none.sock")}).EndpointAdded(t.Context(), ep); err == nil {
		t.Error("EndpointAdded without an agent: nil error")
	}
}

func TestAddTellsNotifierAndDelToo(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	node, pod := nstest.New(t), nstest.New(t)
	dataDir := t.TempDir()
	r := &recorder{}
	p := newTestPlugin(r)
	args := cmdArgs(t, dataDir, pod.Path())
	nstest.Do(t, node, func() error {
		res, err := p.Add(ctx, args)
		if err != nil {
			return fmt.Errorf("Add: %w", err)
		}
		cur, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		if len(r.added) != 1 {
			t.Fatalf("EndpointAdded calls = %d, want 1", len(r.added))
		}
		ep := r.added[0]
		if ep.IP.String() != "10.244.1.2" || ep.HostIfName != veth.HostIfName("c1", "eth0") ||
			ep.PodNamespace != "default" || ep.PodName != "web-0" || ep.HostIfIndex == 0 ||
			ep.HostMAC.String() != cur.Interfaces[0].Mac || ep.PodMAC.String() != cur.Interfaces[1].Mac {
			t.Errorf("endpoint = %+v, result = %v", ep, cur)
		}
		if err := p.Check(ctx, args); err != nil {
			t.Errorf("Check: %v", err)
		}
		if err := p.Del(ctx, args); err != nil {
			return fmt.Errorf("Del: %w", err)
		}
		if len(r.deleted) != 1 || r.deleted[0].IP.String() != "10.244.1.2" {
			t.Errorf("EndpointDeleted = %+v, want one with IP 10.244.1.2", r.deleted)
		}
		return nil
	})
}

func TestAddCleansUpWhenNotifierFails(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	node, pod := nstest.New(t), nstest.New(t)
	dataDir := t.TempDir()
	r := &recorder{failAdd: errors.New("agent said no")}
	p := newTestPlugin(r)
	nstest.Do(t, node, func() error {
		_, err := p.Add(ctx, cmdArgs(t, dataDir, pod.Path()))
		var e *types.Error
		if !errors.As(err, &e) || !strings.Contains(e.Msg, "agent said no") {
			t.Fatalf("Add = %v, want CNI error mentioning the agent", err)
		}
		if _, err := netlink.LinkByName(veth.HostIfName("c1", "eth0")); err == nil {
			t.Error("host veth left behind")
		}
		return nil
	})
	files, err := filepath.Glob(filepath.Join(dataDir, "10.*"))
	if err != nil || len(files) != 0 {
		t.Errorf("IP files left behind: %v %v", files, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "last_reserved_ip")); err != nil {
		t.Errorf("last_reserved_ip: %v (the allocation happened before the failure)", err)
	}
}

func TestDelWithoutAnything(t *testing.T) {
	// DEL of something never added: no netns, no veth, no IP. Runs without
	// root: nothing is created.
	p := New(Options{})
	args := cmdArgs(t, t.TempDir(), "")
	if err := p.Del(context.Background(), args); err != nil {
		t.Errorf("Del = %v, want nil", err)
	}
}

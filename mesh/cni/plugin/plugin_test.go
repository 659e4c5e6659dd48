package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

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
	if _, err := NotifierFor(netconf.Config{AgentSocket: "/run/membrane/agent.sock"}); err == nil {
		t.Error("NotifierFor(agentSocket) = nil error, want error until the agent client exists")
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

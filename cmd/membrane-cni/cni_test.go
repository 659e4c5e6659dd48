package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/cni/nstest"
	"github.com/membrane-mesh/membrane/mesh/cni/veth"
)

// TestPlugin drives the built binary through libcni, as a container runtime
// would, from inside a test node netns.
func TestPlugin(t *testing.T) {
	nstest.RequireRoot(t)
	bin := buildPlugin(t)

	t.Run("lifecycle", func(t *testing.T) { testLifecycle(t, bin) })
	t.Run("check reports breakage", func(t *testing.T) { testCheckBreakage(t, bin) })
	t.Run("missing netns", func(t *testing.T) { testMissingNetns(t, bin) })
	t.Run("bad config", func(t *testing.T) { testBadConfig(t, bin) })
	t.Run("malformed stdin", func(t *testing.T) { testMalformedStdin(t, bin) })
	t.Run("exhausted range", func(t *testing.T) { testExhausted(t, bin) })
	t.Run("cni 0.4.0", func(t *testing.T) { testOldVersion(t, bin) })
	t.Run("status and gc", func(t *testing.T) { testStatusAndGC(t, bin) })
}

func testLifecycle(t *testing.T, bin string) {
	n := newNode(t, bin)
	list := n.conf("1.0.0", nil)
	podA, podB := nstest.New(t), nstest.New(t)

	resA := n.mustAdd(list, "pod-a", podA)
	resB := n.mustAdd(list, "pod-b", podB)
	checkResult(t, resA, "pod-a", podA, "10.244.1.2")
	checkResult(t, resB, "pod-b", podB, "10.244.1.3")
	checkPod(t, podA, "10.244.1.2", resA.Interfaces[0].Mac, 1400)
	checkHost(t, n, "pod-a", "10.244.1.2", 1400)
	if got := n.ipFiles(); !slices.Equal(got, []string{"10.244.1.2", "10.244.1.3"}) {
		t.Errorf("IP files = %v", got)
	}
	for _, id := range []string{"pod-a", "pod-b"} {
		pod := map[string]ns.NetNS{"pod-a": podA, "pod-b": podB}[id]
		if err := n.check(list, id, pod.Path()); err != nil {
			t.Errorf("CHECK %s: %v", id, err)
		}
	}

	// B connects to A over TCP; A sees B's pod IP.
	if got := connect(t, podA, podB, "10.244.1.2"); got != "10.244.1.3" {
		t.Errorf("server in pod-a saw peer %s, want 10.244.1.3", got)
	}

	// ADD again for the same pod without DEL (a runtime retrying after a
	// timeout) keeps the IP and rebuilds the veth.
	checkResult(t, n.mustAdd(list, "pod-a", podA), "pod-a", podA, "10.244.1.2")
	if err := n.check(list, "pod-a", podA.Path()); err != nil {
		t.Errorf("CHECK pod-a after repeated ADD: %v", err)
	}
	if got := connect(t, podB, podA, "10.244.1.3"); got != "10.244.1.2" {
		t.Errorf("server in pod-b saw peer %s, want 10.244.1.2", got)
	}

	if err := n.del(list, "pod-a", podA.Path()); err != nil {
		t.Fatalf("DEL pod-a: %v", err)
	}
	if got := n.hostLinks(); !slices.Equal(got, []string{veth.HostIfName("pod-b", "eth0")}) {
		t.Errorf("host links after DEL pod-a = %v, want only pod-b's", got)
	}
	if got := n.ipFiles(); !slices.Equal(got, []string{"10.244.1.3"}) {
		t.Errorf("IP files after DEL pod-a = %v", got)
	}
	nstest.Do(t, podA, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("pod-a eth0 still exists after DEL")
		}
		return nil
	})
	if err := n.del(list, "pod-a", podA.Path()); err != nil {
		t.Errorf("second DEL pod-a: %v", err)
	}
	if err := n.check(list, "pod-b", podB.Path()); err != nil {
		t.Errorf("CHECK pod-b after DEL pod-a: %v", err)
	}

	// A new pod does not get pod-a's freed IP straight away.
	podC := nstest.New(t)
	checkResult(t, n.mustAdd(list, "pod-c", podC), "pod-c", podC, "10.244.1.4")

	// DEL after the pod's netns is gone still cleans up.
	pathB := podB.Path()
	nstest.Delete(t, podB)
	if err := n.del(list, "pod-b", pathB); err != nil {
		t.Errorf("DEL pod-b with its netns gone: %v", err)
	}
	if got := n.ipFiles(); !slices.Equal(got, []string{"10.244.1.4"}) {
		t.Errorf("IP files after DEL pod-b = %v", got)
	}
	if got := n.hostLinks(); !slices.Equal(got, []string{veth.HostIfName("pod-c", "eth0")}) {
		t.Errorf("host links after DEL pod-b = %v", got)
	}
	if err := n.del(list, "pod-c", podC.Path()); err != nil {
		t.Errorf("DEL pod-c: %v", err)
	}

	log, err := os.ReadFile(n.logFile)
	if err != nil {
		t.Fatalf("log file: %v", err)
	}
	for _, want := range []string{`"msg":"pod attached"`, `"msg":"pod detached"`, `"pod":"default/pod-a"`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log file lacks %s:\n%s", want, log)
		}
	}
}

func checkResult(t *testing.T, res *current.Result, id string, pod ns.NetNS, ip string) {
	t.Helper()
	if len(res.Interfaces) != 2 {
		t.Fatalf("result interfaces = %v, want host and pod", res.Interfaces)
	}
	host, podIf := res.Interfaces[0], res.Interfaces[1]
	if host.Name != veth.HostIfName(id, "eth0") || host.Mac == "" || host.Sandbox != "" {
		t.Errorf("host interface = %+v", host)
	}
	if podIf.Name != "eth0" || podIf.Mac == "" || podIf.Sandbox != pod.Path() {
		t.Errorf("pod interface = %+v", podIf)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != ip+"/32" ||
		res.IPs[0].Gateway.String() != "169.254.1.1" || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
		t.Errorf("result IPs = %v, want %s/32 gw 169.254.1.1 on interface 1", res.IPs, ip)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != "169.254.1.1" {
		t.Errorf("result routes = %v, want 0.0.0.0/0 via 169.254.1.1", res.Routes)
	}
}

// checkPod looks at the pod's netns directly.
func checkPod(t *testing.T, pod ns.NetNS, ip, hostMAC string, mtu int) {
	t.Helper()
	nstest.Do(t, pod, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("pod lo is down")
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if eth0.Attrs().MTU != mtu {
			t.Errorf("pod eth0 MTU = %d, want %d", eth0.Attrs().MTU, mtu)
		}
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != ip+"/32" {
			t.Errorf("pod eth0 addresses = %v, want %s/32", addrs, ip)
		}
		routes, err := netlink.RouteList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var def, gw bool
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "169.254.1.1" {
				def = true
			}
			if r.Dst != nil && r.Dst.String() == "169.254.1.1/32" && r.Scope == netlink.SCOPE_LINK {
				gw = true
			}
		}
		if !def || !gw {
			t.Errorf("pod routes = %v, want default via 169.254.1.1 and 169.254.1.1 scope link", routes)
		}
		neighs, err := netlink.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		found := false
		for _, nb := range neighs {
			if nb.IP.String() == "169.254.1.1" && nb.HardwareAddr.String() == hostMAC && nb.State == netlink.NUD_PERMANENT {
				found = true
			}
		}
		if !found {
			t.Errorf("pod neighbors = %v, want 169.254.1.1 lladdr %s PERMANENT", neighs, hostMAC)
		}
		return nil
	})
}

// checkHost looks at the node's netns directly.
func checkHost(t *testing.T, n *node, id, ip string, mtu int) {
	t.Helper()
	name := veth.HostIfName(id, "eth0")
	nstest.Do(t, n.ns, func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().MTU != mtu {
			t.Errorf("host veth %s: flags %v MTU %d, want up and %d", name, link.Attrs().Flags, link.Attrs().MTU, mtu)
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].Dst.String() != ip+"/32" || routes[0].Scope != netlink.SCOPE_LINK {
			t.Errorf("host routes via %s = %v, want %s/32 scope link", name, routes, ip)
		}
		for _, s := range []string{"net.ipv4.ip_forward", "net.ipv4.conf." + name + ".forwarding"} {
			v, err := sysctl(s)
			if err != nil {
				return err
			}
			if v != "1" {
				t.Errorf("node %s = %s, want 1", s, v)
			}
		}
		return nil
	})
}

// connect listens on TCP in server's netns, dials it from client's netns and
// returns the peer address the server saw.
func connect(t *testing.T, server, client ns.NetNS, serverIP string) string {
	t.Helper()
	var ln net.Listener
	nstest.Do(t, server, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(serverIP, "0"))
		return err
	})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = c.Write([]byte(host + "\n"))
	}()
	var seen string
	nstest.Do(t, client, func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		seen, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(seen)
}

func testCheckBreakage(t *testing.T, bin string) {
	n := newNode(t, bin)
	list := n.conf("1.0.0", nil)
	pod := nstest.New(t)
	n.mustAdd(list, "pod-a", pod)
	nstest.Do(t, n.ns, func() error {
		link, err := netlink.LinkByName(veth.HostIfName("pod-a", "eth0"))
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		if err != nil || len(routes) == 0 {
			t.Fatalf("host routes = %v, %v", routes, err)
		}
		return netlink.RouteDel(&routes[0])
	})
	err := n.check(list, "pod-a", pod.Path())
	wantCNIError(t, err, types.ErrInternal, "host: missing route 10.244.1.2/32 dev "+veth.HostIfName("pod-a", "eth0"))

	err = n.check(list, "pod-x", pod.Path())
	if err == nil {
		t.Error("CHECK for a container that was never added succeeded")
	}
}

func testMissingNetns(t *testing.T, bin string) {
	n := newNode(t, bin)
	list := n.conf("1.0.0", nil)
	_, err := n.add(list, "pod-a", "/var/run/netns/membrane-test-does-not-exist")
	wantCNIError(t, err, types.ErrInvalidNetNS, `netns "/var/run/netns/membrane-test-does-not-exist" does not exist`)
	if files, links := n.ipFiles(), n.hostLinks(); len(files) != 0 || len(links) != 0 {
		t.Errorf("leaked after failed ADD: IP files %v, links %v", files, links)
	}
}

func testBadConfig(t *testing.T, bin string) {
	tests := []struct {
		name   string
		fields map[string]any
		code   uint
		msg    string
	}{
		{"missing podCIDR", map[string]any{"podCIDR": nil}, types.ErrInvalidNetworkConfig, "podCIDR is required"},
		{"invalid podCIDR", map[string]any{"podCIDR": "10.244.300.0/24"}, types.ErrInvalidNetworkConfig, `podCIDR "10.244.300.0/24" is not a valid CIDR`},
		{"IPv6 podCIDR", map[string]any{"podCIDR": "fd00:10:244:1::/64"}, types.ErrInvalidNetworkConfig, "IPv6 is not supported yet"},
		{"wrong field type", map[string]any{"mtu": "big"}, types.ErrDecodingFailure, "decode network config"},
		{"relative agent socket", map[string]any{"agentSocket": "run/membrane/agent.sock"}, types.ErrInvalidNetworkConfig, "must be an absolute path"},
		// No agent to put the pod into the policy datapath: ADD fails
		// rather than leave the pod unpoliced.
		{"agent not answering", map[string]any{"agentSocket": "/run/membrane/no-agent.sock"}, types.ErrInternal, "tell agent about endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, bin)
			pod := nstest.New(t)
			_, err := n.add(n.conf("1.0.0", tt.fields), "pod-a", pod.Path())
			wantCNIError(t, err, tt.code, tt.msg)
			if files, links := n.ipFiles(), n.hostLinks(); len(files) != 0 || len(links) != 0 {
				t.Errorf("leaked after failed ADD: IP files %v, links %v", files, links)
			}
		})
	}
}

// testMalformedStdin runs the binary directly: libcni would refuse to parse
// such a config itself.
func testMalformedStdin(t *testing.T, bin string) {
	pod := nstest.New(t)
	cmd := exec.Command(bin + "/membrane-cni")
	cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID=pod-a", "CNI_NETNS="+pod.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH="+bin)
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0","name":`)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err == nil {
		t.Fatal("plugin succeeded on malformed config")
	}
	var e types.Error
	if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
		t.Fatalf("stdout is not a CNI error: %v\n%s", err, stdout.String())
	}
	if e.Code != types.ErrDecodingFailure {
		t.Errorf("error = %+v, want code %d", e, types.ErrDecodingFailure)
	}
}

func testExhausted(t *testing.T, bin string) {
	n := newNode(t, bin)
	list := n.conf("1.0.0", map[string]any{"podCIDR": "10.244.1.0/30"})
	podA, podB := nstest.New(t), nstest.New(t)
	checkResult(t, n.mustAdd(list, "pod-a", podA), "pod-a", podA, "10.244.1.2")
	_, err := n.add(list, "pod-b", podB.Path())
	wantCNIError(t, err, types.ErrTryAgainLater, "no free IP in 10.244.1.0/30 (1 address allocated)")
	if got := n.ipFiles(); !slices.Equal(got, []string{"10.244.1.2"}) {
		t.Errorf("IP files = %v, want only pod-a's", got)
	}
	if got := n.hostLinks(); !slices.Equal(got, []string{veth.HostIfName("pod-a", "eth0")}) {
		t.Errorf("host links = %v, want only pod-a's", got)
	}
	nstest.Do(t, podB, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("pod-b got an eth0 although ADD failed")
		}
		return nil
	})
	// Once pod-a is gone, pod-b fits.
	if err := n.del(list, "pod-a", podA.Path()); err != nil {
		t.Fatalf("DEL pod-a: %v", err)
	}
	checkResult(t, n.mustAdd(list, "pod-b", podB), "pod-b", podB, "10.244.1.2")
}

func testOldVersion(t *testing.T, bin string) {
	n := newNode(t, bin)
	list := n.conf("0.4.0", nil)
	pod := nstest.New(t)
	res := n.mustAdd(list, "pod-a", pod)
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.1.2/32" {
		t.Errorf("0.4.0 result IPs = %v", res.IPs)
	}
	if err := n.check(list, "pod-a", pod.Path()); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := n.del(list, "pod-a", pod.Path()); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

func testStatusAndGC(t *testing.T, bin string) {
	n := newNode(t, bin)
	list := n.conf("1.1.0", nil)
	ctx := t.Context()
	if err := n.cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	podA, podB := nstest.New(t), nstest.New(t)
	n.mustAdd(list, "pod-a", podA)
	n.mustAdd(list, "pod-b", podB)
	// The runtime knows only pod-a; pod-b's attachment is stale.
	err := n.ns.Do(func(ns.NetNS) error {
		return n.cni.GCNetworkList(ctx, list, &libcni.GCArgs{
			ValidAttachments: []types.GCAttachment{{ContainerID: "pod-a", IfName: "eth0"}},
		})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := n.ipFiles(); !slices.Equal(got, []string{"10.244.1.2"}) {
		t.Errorf("IP files after GC = %v, want only pod-a's", got)
	}
	if got := n.hostLinks(); !slices.Equal(got, []string{veth.HostIfName("pod-a", "eth0")}) {
		t.Errorf("host links after GC = %v, want only pod-a's", got)
	}

	// A data dir that cannot be created makes the plugin unavailable.
	blocker := t.TempDir() + "/file"
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = n.cni.GetStatusNetworkList(ctx, n.conf("1.1.0", map[string]any{"dataDir": blocker + "/ipam"}))
	wantCNIError(t, err, types.ErrPluginNotAvailable, "ipam data dir")
}

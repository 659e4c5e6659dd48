package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/cni/nstest"
)

// buildPlugin compiles this command into a fresh directory and returns it.
func buildPlugin(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go toolchain not found: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(dir, "membrane-cni"), ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// node is a test "node": its own network namespace, a data dir, and the CNI
// library set up the way a kubelet's runtime would be.
type node struct {
	t       *testing.T
	ns      ns.NetNS
	cni     *libcni.CNIConfig
	binDir  string
	dataDir string
	logFile string
}

func newNode(t *testing.T, binDir string) *node {
	t.Helper()
	nstest.RequireRoot(t)
	tmp := t.TempDir()
	nodeNS := nstest.New(t)
	// Like every real node, lo is up. Without it the netns has no local
	// routing table, the kernel takes every address for a broadcast one and
	// the node sends pod traffic to ff:ff:ff:ff:ff:ff.
	nstest.Do(t, nodeNS, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return &node{
		t:       t,
		ns:      nodeNS,
		cni:     libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(tmp, "cache"), nil),
		binDir:  binDir,
		dataDir: filepath.Join(tmp, "ipam"),
		logFile: filepath.Join(tmp, "membrane-cni.log"),
	}
}

// conf returns a conflist for the plugin; fields overrides and extends the
// plugin entry, and a nil value removes a field.
func (n *node) conf(cniVersion string, fields map[string]any) *libcni.NetworkConfigList {
	n.t.Helper()
	entry := map[string]any{
		"type":    "membrane-cni",
		"podCIDR": "10.244.1.0/24",
		"dataDir": n.dataDir,
		"mtu":     1400,
		"logFile": n.logFile,
	}
	for k, v := range fields {
		if v == nil {
			delete(entry, k)
		} else {
			entry[k] = v
		}
	}
	data, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": "membrane", "plugins": []any{entry}})
	if err != nil {
		n.t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		n.t.Fatalf("parse conflist: %v", err)
	}
	return list
}

func runtimeConf(id, netnsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       netnsPath,
		IfName:      "eth0",
		Args:        [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", id}},
	}
}

// inNode runs fn in the node's netns, so that the plugin binary, which
// inherits the namespace of the thread that starts it, runs there too.
func (n *node) inNode(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.ns.Do(func(ns.NetNS) error { return fn(ctx) })
}

func (n *node) add(list *libcni.NetworkConfigList, id, netnsPath string) (*current.Result, error) {
	var res types.Result
	err := n.inNode(func(ctx context.Context) error {
		var err error
		res, err = n.cni.AddNetworkList(ctx, list, runtimeConf(id, netnsPath))
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (n *node) mustAdd(list *libcni.NetworkConfigList, id string, pod ns.NetNS) *current.Result {
	n.t.Helper()
	res, err := n.add(list, id, pod.Path())
	if err != nil {
		n.t.Fatalf("ADD %s: %v", id, err)
	}
	return res
}

func (n *node) check(list *libcni.NetworkConfigList, id, netnsPath string) error {
	return n.inNode(func(ctx context.Context) error {
		return n.cni.CheckNetworkList(ctx, list, runtimeConf(id, netnsPath))
	})
}

func (n *node) del(list *libcni.NetworkConfigList, id, netnsPath string) error {
	return n.inNode(func(ctx context.Context) error {
		return n.cni.DelNetworkList(ctx, list, runtimeConf(id, netnsPath))
	})
}

// hostLinks returns the names of the node's host-side pod interfaces.
func (n *node) hostLinks() []string {
	n.t.Helper()
	var names []string
	nstest.Do(n.t, n.ns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "mbr") {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	return names
}

// ipFiles returns the allocation files in the data dir.
func (n *node) ipFiles() []string {
	n.t.Helper()
	entries, err := os.ReadDir(n.dataDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.Count(e.Name(), ".") == 3 {
			names = append(names, e.Name())
		}
	}
	return names
}

// wantCNIError fails the test unless err carries a CNI error with code and a
// message containing msg.
func wantCNIError(t *testing.T, err error, code uint, msg string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want CNI error %d %q", err, code, msg)
	}
	if e.Code != code || !strings.Contains(e.Msg, msg) {
		t.Fatalf("CNI error = %d %q, want %d containing %q", e.Code, e.Msg, code, msg)
	}
}

// sysctl reads a sysctl in the calling thread's netns.
func sysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/")))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/membrane-mesh/membrane/e2e/noderunner"
)

// Up creates the cluster: the bare cluster (control plane, nodes, underlay),
// then Membrane from charts/membrane with the pinned helm and values that
// fit the cluster, then cluster DNS. It returns once every node is Ready and
// the chart's workloads and DNS are available. It first prepares the host
// (see prepareHost). A failure part-way removes whatever was created but the
// logs, and its error quotes the failing component's log.
func Up(ctx context.Context, log *slog.Logger, o Options) (*State, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm"} {
		if _, err := os.Stat(filepath.Join(o.ToolsDir, "bin", bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make tools` first", bin, filepath.Join(o.ToolsDir, "bin"))
		}
	}
	for _, bin := range []string{"membrane-dev", "membrane-cni"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make build` first", bin, o.BinDir)
		}
	}
	if !o.NoMembrane {
		for _, img := range []string{agentImage, operatorImage} {
			dir := filepath.Join(o.BinDir, "images", strings.ReplaceAll(img, "/", "_"))
			if _, err := os.Stat(dir); err != nil {
				return nil, fmt.Errorf("image %s not found in %s: run `make build` first", img, filepath.Join(o.BinDir, "images"))
			}
		}
	}
	cgroupRoot, err := prepareHost(log)
	if err != nil {
		return nil, err
	}
	s, err := reserve(o, cgroupRoot)
	if err != nil {
		return nil, err
	}
	if err := build(ctx, log, o, s); err != nil {
		if derr := down(context.WithoutCancel(ctx), log, o.Name, true); derr != nil {
			log.Error("clean up after failed start", "cluster", o.Name, "error", derr)
		}
		return nil, startFailure(o.Name, s.Layout().LogDir(), err)
	}
	return s, nil
}

// reserve claims a name and an underlay index and writes the first record.
func reserve(o Options, cgroupRoot string) (*State, error) {
	if err := os.MkdirAll(DefaultStateRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", DefaultStateRoot, err)
	}
	lock, err := os.OpenFile(filepath.Join(DefaultStateRoot, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock cluster list: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock cluster list: %w", err)
	}
	if _, err := Load(o.Name); err == nil {
		return nil, fmt.Errorf("cluster %q already exists: run `membrane dev down --name %s` first", o.Name, o.Name)
	} else if !errors.Is(err, ErrNoCluster) {
		return nil, err
	}
	// The logs a failed start of the same name left behind.
	if err := os.RemoveAll(Layout{Name: o.Name}.StateDir()); err != nil {
		return nil, fmt.Errorf("remove logs of an earlier start: %w", err)
	}
	idx, err := allocateIndex()
	if err != nil {
		return nil, err
	}
	s := &State{Name: o.Name, Index: idx, PodCIDR: o.PodCIDR, ServiceCIDR: o.ServiceCIDR, CgroupRoot: cgroupRoot, Encryption: o.Encryption, IdentityProvider: o.IdentityProvider, NoMembrane: o.NoMembrane, HelmSet: o.HelmSet, ClusterID: o.ClusterID, UnderlayMTU: o.UnderlayMTU}
	l := s.Layout()
	for i := 1; i <= o.Nodes; i++ {
		name := l.NodeName(i)
		s.Nodes = append(s.Nodes, NodeState{Name: name, Index: i, IP: l.NodeIP(i).String(), Netns: l.NodeNetns(name), Link: l.NodeLink(i)})
	}
	for _, d := range []string{l.StateDir(), l.LogDir(), l.RunDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	return s, s.save()
}

func build(ctx context.Context, log *slog.Logger, o Options, s *State) error {
	l := s.Layout()
	// The chart, with the values it gets, must render before anything
	// starts.
	if !o.NoMembrane {
		if err := prepareHelm(ctx, o, s); err != nil {
			return err
		}
	}
	svc := netip.MustParsePrefix(s.ServiceCIDR)
	if err := writePKI(l, svc, s.Nodes); err != nil {
		return err
	}
	if err := createBridge(l); err != nil {
		return err
	}
	if err := attachNamespace(l, l.ControlPlaneNetns(), l.ControlPlaneLink(), l.APIServerIP(), 0); err != nil {
		return err
	}
	for _, n := range s.Nodes {
		if err := attachNamespace(l, n.Netns, n.Link, netip.MustParseAddr(n.IP), s.UnderlayMTU); err != nil {
			return err
		}
		if err := enableForwarding(n.Netns); err != nil {
			return err
		}
	}
	if err := createWorld(o, s); err != nil {
		return err
	}
	cgDir := l.CgroupDir(s.CgroupRoot)
	cpCgroup := filepath.Join(cgDir, "control-plane")
	if err := os.MkdirAll(cpCgroup, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", cpCgroup, err)
	}
	log.Info("starting control plane", "cluster", s.Name, "apiserver", l.APIServerURL())
	client, err := Client(l.Kubeconfig())
	if err != nil {
		return err
	}
	// etcd and the API server first; the controller manager and the scheduler
	// need the API server's bootstrap RBAC policy in place.
	for _, c := range controlPlane(l, s, filepath.Join(o.ToolsDir, "bin")) {
		if c.name == "kube-controller-manager" {
			if err := waitAPIServer(ctx, client, s); err != nil {
				return err
			}
		}
		p, err := startDetached(c.name, l.ControlPlaneNetns(), cpCgroup, filepath.Join(l.LogDir(), c.name+".log"), c.argv)
		if err != nil {
			return err
		}
		s.Processes = append(s.Processes, p)
		if err := s.save(); err != nil {
			return err
		}
	}
	// The underlay's route to each node's PodCIDR is the harness's only
	// role; the chart brings Membrane's CRDs, roles and workloads.
	if err := applyUnderlayRBAC(ctx, client); err != nil {
		return err
	}
	if err := startNodes(o, s); err != nil {
		return err
	}
	// The release's objects are created while the nodes register and get
	// their PodCIDRs; its pods start once they have.
	if !o.NoMembrane {
		if err := installHelm(ctx, log, o, s); err != nil {
			return err
		}
	}
	log.Info("waiting for nodes", "cluster", s.Name, "nodes", len(s.Nodes))
	if err := waitNodesReady(ctx, client, s); err != nil {
		return err
	}
	if o.NoMembrane {
		return nil
	}
	return waitMembrane(ctx, log, o, s, client)
}

// startNodes starts every node runner.
func startNodes(o Options, s *State) error {
	for _, n := range s.Nodes {
		p, err := startNode(o, s, n)
		if err != nil {
			return err
		}
		s.Processes = append(s.Processes, p)
		if err := s.save(); err != nil {
			return err
		}
	}
	return nil
}

// startNode writes the node runner's config and starts it in the node namespace.
func startNode(o Options, s *State, n NodeState) (Process, error) {
	l := s.Layout()
	dir := l.NodeDir(n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Process{}, fmt.Errorf("create node dir: %w", err)
	}
	cg := filepath.Join(l.CgroupDir(s.CgroupRoot), n.Name)
	system := filepath.Join(cg, "system")
	if err := os.MkdirAll(system, 0o755); err != nil {
		return Process{}, fmt.Errorf("create cgroup %s: %w", system, err)
	}
	hostPaths := l.NodeHostPaths(n.Name, s.CgroupRoot)
	for _, hp := range hostPaths {
		// The bpffs pin directory only where bpffs is mounted: a pod that
		// needs it gets a clear hostPath error otherwise.
		if hp.Path == "/sys/fs/bpf" {
			_ = os.MkdirAll(hp.Source, 0o700)
			continue
		}
		if err := os.MkdirAll(hp.Source, 0o755); err != nil {
			return Process{}, fmt.Errorf("create the node's %s: %w", hp.Path, err)
		}
	}
	svc := netip.MustParsePrefix(s.ServiceCIDR)
	cfg := noderunner.Config{
		Cluster:           s.Name,
		NodeName:          n.Name,
		NodeIP:            n.IP,
		Kubeconfig:        filepath.Join(l.PKIDir(), "node-"+n.Name+".kubeconfig"),
		RoutesKubeconfig:  filepath.Join(l.PKIDir(), "underlay.kubeconfig"),
		KubeletCert:       filepath.Join(l.PKIDir(), "kubelet-"+n.Name+".crt"),
		KubeletKey:        filepath.Join(l.PKIDir(), "kubelet-"+n.Name+".key"),
		ClientCA:          filepath.Join(l.PKIDir(), "ca.crt"),
		KubeletPort:       KubeletPort,
		StateDir:          dir,
		PodNetnsDir:       filepath.Join(l.RunDir(), "netns", n.Name),
		CgroupDir:         cg,
		ImagesDir:         filepath.Join(o.ToolsDir, "images"),
		ControlPlaneNetns: l.ControlPlaneNetns(),
		ClusterDNS:        ClusterDNS(svc).String(),
		ClusterDomain:     ClusterDomain,
		KubeletVersion:    "v1.34.2",
		HostPaths:         hostPaths,
		OwnImagesDir:      filepath.Join(o.BinDir, "images"),
	}
	if o.NoMembrane {
		// No agent to install the CNI configuration: the runner does.
		cfg.StaticCNI = filepath.Join(o.BinDir, "membrane-cni")
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return Process{}, fmt.Errorf("encode node config: %w", err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return Process{}, fmt.Errorf("write node config: %w", err)
	}
	argv := []string{filepath.Join(o.BinDir, "membrane-dev"), "node", "--config", cfgPath}
	return startDetached("node-runner/"+n.Name, n.Netns, system, filepath.Join(l.LogDir(), "node-"+n.Name+".log"), argv)
}

// Client returns a clientset for a kubeconfig file.
func Client(kubeconfig string) (kubernetes.Interface, error) {
	return client(kubeconfig, 50, 100, "")
}

// BulkClient returns a clientset for a kubeconfig file allowed a high
// request rate, in protobuf: for creating thousands of objects.
func BulkClient(kubeconfig string) (kubernetes.Interface, error) {
	return client(kubeconfig, 5000, 10000, runtime.ContentTypeProtobuf)
}

// client is a clientset for kubeconfig at that request rate, in
// contentType (empty: JSON).
func client(kubeconfig string, qps float32, burst int, contentType string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst, cfg.ContentType = qps, burst, contentType
	// Read the credentials once: the files go away with the cluster, and a
	// client that re-reads them would complain ever after.
	if err := rest.LoadTLSFiles(cfg); err != nil {
		return nil, fmt.Errorf("load credentials of %s: %w", kubeconfig, err)
	}
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = "", "", ""
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", kubeconfig, err)
	}
	return c, nil
}

func waitAPIServer(ctx context.Context, c kubernetes.Interface, s *State) error {
	err := poll(ctx, 90*time.Second, "kube-apiserver /readyz", func() (bool, error) {
		if err := s.CheckProcesses(); err != nil {
			return false, err
		}
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
	return s.blame(err, "kube-apiserver")
}

func waitNodesReady(ctx context.Context, c kubernetes.Interface, s *State) error {
	var waiting string // a node runner whose Node is not Ready yet
	err := poll(ctx, 90*time.Second, "nodes Ready with a PodCIDR", func() (bool, error) {
		if err := s.CheckProcesses(); err != nil {
			return false, err
		}
		waiting = "kube-apiserver"
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := map[string]bool{}
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue && n.Spec.PodCIDR != "" {
					ready[n.Name] = true
				}
			}
		}
		for _, n := range s.Nodes {
			if !ready[n.Name] {
				waiting = "node-runner/" + n.Name
				return false, nil
			}
		}
		return true, nil
	})
	return s.blame(err, waiting)
}

// CheckProcesses fails when a process the cluster needs has exited.
func (s *State) CheckProcesses() error {
	for _, p := range s.Processes {
		if !p.Alive() {
			return &ComponentError{Component: p.Name, Log: p.Log, Err: fmt.Errorf("%s exited", p.Name)}
		}
	}
	return nil
}

func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// ClusterDNS is the kube-dns Service address: the tenth of the service range,
// as kubeadm and kind choose it.
func ClusterDNS(serviceCIDR netip.Prefix) netip.Addr {
	a := serviceCIDR.Masked().Addr().As4()
	a[3] += 10
	return netip.AddrFrom4(a)
}

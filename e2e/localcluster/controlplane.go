package localcluster

import (
	"fmt"
	"path/filepath"
)

// component is one process of the cluster: its name and command line.
type component struct {
	name string
	argv []string
}

// controlPlane returns etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, in start order. They share the control-plane namespace, so
// everything but the API server listens on that namespace's loopback only.
func controlPlane(l Layout, s *State, toolsBin string) []component {
	pki := func(name string) string { return filepath.Join(l.PKIDir(), name) }
	bin := func(name string) string { return filepath.Join(toolsBin, name) }
	return []component{
		{"etcd", []string{
			bin("etcd"),
			"--name=default",
			"--data-dir=" + filepath.Join(l.StateDir(), "etcd"),
			"--listen-client-urls=http://127.0.0.1:2379",
			"--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380",
			"--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=default=http://127.0.0.1:2380",
			"--listen-metrics-urls=http://127.0.0.1:2381",
			// A throw-away development cluster: durability is not worth the fsyncs.
			"--unsafe-no-fsync",
			"--log-level=warn",
		}},
		{"kube-apiserver", []string{
			bin("kube-apiserver"),
			"--etcd-servers=http://127.0.0.1:2379",
			"--bind-address=" + l.APIServerIP().String(),
			"--advertise-address=" + l.APIServerIP().String(),
			fmt.Sprintf("--secure-port=%d", APIServerPort),
			"--cert-dir=" + filepath.Join(l.StateDir(), "apiserver"),
			"--tls-cert-file=" + pki("apiserver.crt"),
			"--tls-private-key-file=" + pki("apiserver.key"),
			"--client-ca-file=" + pki("ca.crt"),
			"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
			"--service-account-key-file=" + pki("sa.pub"),
			"--service-account-signing-key-file=" + pki("sa.key"),
			"--service-cluster-ip-range=" + s.ServiceCIDR,
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
			"--kubelet-certificate-authority=" + pki("ca.crt"),
			"--kubelet-preferred-address-types=InternalIP",
			"--profiling=false",
			"--v=1",
		}},
		{"kube-controller-manager", []string{
			bin("kube-controller-manager"),
			"--kubeconfig=" + pki("controller-manager.kubeconfig"),
			"--authentication-kubeconfig=" + pki("controller-manager.kubeconfig"),
			"--authorization-kubeconfig=" + pki("controller-manager.kubeconfig"),
			"--bind-address=127.0.0.1",
			"--allocate-node-cidrs=true",
			"--cluster-cidr=" + s.PodCIDR,
			"--node-cidr-mask-size=24",
			"--service-cluster-ip-range=" + s.ServiceCIDR,
			"--configure-cloud-routes=false",
			"--service-account-private-key-file=" + pki("sa.key"),
			"--root-ca-file=" + pki("ca.crt"),
			"--cluster-signing-cert-file=" + pki("ca.crt"),
			"--cluster-signing-key-file=" + pki("ca.key"),
			"--use-service-account-credentials=true",
			// Each controller's start asks for its service-account token:
			// at the default 20 requests/s the node IPAM controller (and so
			// every node's PodCIDR) comes about 5 s after the start.
			"--kube-api-qps=200",
			"--kube-api-burst=400",
			"--leader-elect=true",
			"--profiling=false",
			"--v=1",
		}},
		{"kube-scheduler", []string{
			bin("kube-scheduler"),
			"--kubeconfig=" + pki("scheduler.kubeconfig"),
			"--authentication-kubeconfig=" + pki("scheduler.kubeconfig"),
			"--authorization-kubeconfig=" + pki("scheduler.kubeconfig"),
			"--bind-address=127.0.0.1",
			"--leader-elect=true",
			"--profiling=false",
			"--v=1",
		}},
	}
}

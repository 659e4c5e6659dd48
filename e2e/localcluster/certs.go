package localcluster

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/membrane-mesh/membrane/e2e/pki"
)

// identity is one client of the API server.
type identity struct {
	file string
	cn   string
	orgs []string
}

// writePKI issues every certificate and kubeconfig of the cluster.
func writePKI(l Layout, serviceCIDR netip.Prefix, nodes []NodeState) error {
	dir := l.PKIDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pki dir: %w", err)
	}
	ca, err := pki.NewCA("membrane-dev-" + l.Name)
	if err != nil {
		return err
	}
	if err := pki.WritePair(dir, "ca", ca.Cert, ca.Key); err != nil {
		return err
	}
	kubernetesIP := serviceCIDR.Addr().Next()
	cert, key, err := ca.Issue(pki.Request{
		CommonName: "kube-apiserver",
		DNSNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain},
		IPs:        []net.IP{net.IP(l.APIServerIP().AsSlice()), net.IP(kubernetesIP.AsSlice()), net.IPv4(127, 0, 0, 1)},
		Server:     true,
	})
	if err != nil {
		return err
	}
	if err := pki.WritePair(dir, "apiserver", cert, key); err != nil {
		return err
	}
	sa, err := pki.NewSigningKey()
	if err != nil {
		return err
	}
	saKey, err := pki.KeyPEM(sa)
	if err != nil {
		return err
	}
	saPub, err := pki.PublicKeyPEM(sa)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), saKey, 0o600); err != nil {
		return fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.pub"), saPub, 0o644); err != nil {
		return fmt.Errorf("write service-account public key: %w", err)
	}
	clients := []identity{
		{"admin", "membrane-admin", []string{"system:masters"}},
		{"controller-manager", "system:kube-controller-manager", nil},
		{"scheduler", "system:kube-scheduler", nil},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}},
		// The underlay's router: reads Nodes to route PodCIDRs (see rbac.go).
		{"underlay", underlayUser, nil},
	}
	for _, n := range nodes {
		clients = append(clients, identity{"node-" + n.Name, "system:node:" + n.Name, []string{"system:nodes"}})
	}
	for _, c := range clients {
		cert, key, err := ca.Issue(pki.Request{CommonName: c.cn, Organization: c.orgs, Client: true})
		if err != nil {
			return err
		}
		if err := pki.WritePair(dir, c.file, cert, key); err != nil {
			return err
		}
		if err := writeKubeconfig(l, filepath.Join(dir, c.file+".kubeconfig"), c.file); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		cert, key, err := ca.Issue(pki.Request{
			CommonName: n.Name,
			DNSNames:   []string{n.Name},
			IPs:        []net.IP{net.ParseIP(n.IP)},
			Server:     true,
		})
		if err != nil {
			return err
		}
		if err := pki.WritePair(dir, "kubelet-"+n.Name, cert, key); err != nil {
			return err
		}
	}
	// The admin kubeconfig is the one users get.
	return writeKubeconfig(l, l.Kubeconfig(), "admin")
}

// writeKubeconfig writes a kubeconfig for the client certificate pair named
// file in the PKI dir.
func writeKubeconfig(l Layout, path, file string) error {
	dir := l.PKIDir()
	name := "membrane-" + l.Name
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: l.APIServerURL(), CertificateAuthority: filepath.Join(dir, "ca.crt")}
	cfg.AuthInfos[file] = &clientcmdapi.AuthInfo{
		ClientCertificate: filepath.Join(dir, file+".crt"),
		ClientKey:         filepath.Join(dir, file+".key"),
	}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: file}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

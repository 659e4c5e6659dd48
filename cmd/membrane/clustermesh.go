package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/clustermesh"
)

func newClusterMeshCommand(g *globals) *cobra.Command {
	cm := &cobra.Command{
		Use:   "clustermesh",
		Short: "Connect clusters so that global Services span them",
	}
	cm.AddCommand(newClusterMeshConnectCommand(g, false), newClusterMeshConnectCommand(g, true),
		agentListCommand(g, "status", "Show each node's view of the cluster mesh: remote clusters, last sync, global services, remote endpoints, errors",
			agentapi.PathClusterMesh, printClusterMesh))
	return cm
}

// meshSide is one of the two clusters connect and disconnect work on.
type meshSide struct {
	flag   string // the flag naming it, for errors
	rest   *rest.Config
	client kubernetes.Interface
	name   string
	id     int
	cidrs  []netip.Prefix
	server string // the API server address the other cluster's nodes use
}

func newClusterMeshConnectCommand(g *globals, disconnect bool) *cobra.Command {
	var o struct {
		namespace               string
		destKubeconfig, destCtx string
		server, destServer      string
	}
	use, short := "connect", "Connect this cluster (--context) and another (--destination-context) both ways, with read-only credentials"
	if disconnect {
		use, short = "disconnect", "Undo connect: both clusters drop each other's backends and credentials"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			destKubeconfig := o.destKubeconfig
			if destKubeconfig == "" {
				destKubeconfig = g.kubeconfig
			}
			if destKubeconfig == g.kubeconfig && o.destCtx == g.context {
				return errors.New("--destination-context or --destination-kubeconfig: name the other cluster")
			}
			a, err := loadMeshSide(ctx, "--context", g.kubeconfig, g.context, o.namespace, o.server, !disconnect)
			if err != nil {
				return err
			}
			b, err := loadMeshSide(ctx, "--destination-context", destKubeconfig, o.destCtx, o.namespace, o.destServer, !disconnect)
			if err != nil {
				return err
			}
			if disconnect {
				return errors.Join(revoke(ctx, o.namespace, a, b), revoke(ctx, o.namespace, b, a))
			}
			if err := checkPair(a, b); err != nil {
				return err
			}
			for _, dir := range [][2]*meshSide{{a, b}, {b, a}} {
				if err := grant(ctx, o.namespace, dir[0], dir[1]); err != nil {
					return err
				}
			}
			fmt.Fprintf(g.stdout, "Connected %s (id %d) and %s (id %d): each reads the other's global Services with read-only credentials.\n", a.name, a.id, b.name, b.id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.namespace, "namespace", "kube-system", "namespace Membrane is installed in (in both clusters)")
	f.StringVar(&o.destCtx, "destination-context", "", "kubeconfig context of the other cluster")
	f.StringVar(&o.destKubeconfig, "destination-kubeconfig", "", "kubeconfig of the other cluster (default: --kubeconfig)")
	if !disconnect {
		f.StringVar(&o.server, "apiserver-address", "", "this cluster's API server URL as the other cluster's nodes reach it (default: the kubeconfig's)")
		f.StringVar(&o.destServer, "destination-apiserver-address", "", "the other cluster's API server URL as this cluster's nodes reach it (default: its kubeconfig's)")
	}
	return cmd
}

// checkPair refuses two clusters that cannot be connected: same name, same
// id, or overlapping pod CIDRs.
func checkPair(a, b *meshSide) error {
	if a.name == b.name {
		return fmt.Errorf("both clusters are named %q: cluster names must differ (chart value cluster.name)", a.name)
	}
	if a.id == b.id {
		return fmt.Errorf("clusters %s and %s both have id %d: cluster ids must differ (chart value cluster.id)", a.name, b.name, a.id)
	}
	if x, y, ok := clustermesh.Overlap(a.cidrs, b.cidrs); ok {
		return fmt.Errorf("pod CIDRs overlap: %s of cluster %s and %s of cluster %s; pod addresses must be unique across connected clusters", x, a.name, y, b.name)
	}
	return nil
}

func loadMeshSide(ctx context.Context, flag, kubeconfig, context, namespace, server string, full bool) (*meshSide, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: find the cluster: %w", flag, err)
	}
	rc.UserAgent = "membrane-cli/" + version
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	s := &meshSide{flag: flag, rest: rc, client: client, server: server}
	if s.server == "" {
		s.server = rc.Host
	}
	cm, err := client.CoreV1().ConfigMaps(namespace).Get(ctx, clustermesh.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: read %s/%s (is Membrane installed by its chart?): %w", flag, namespace, clustermesh.ConfigMapName, err)
	}
	s.name = cm.Data["cluster-name"]
	if err := clustermesh.ValidateName(s.name); err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if !full {
		return s, nil
	}
	s.id, err = strconv.Atoi(cm.Data["cluster-id"])
	if err != nil {
		return nil, fmt.Errorf("%s: cluster %s: cluster-id %q is not a number", flag, s.name, cm.Data["cluster-id"])
	}
	if err := clustermesh.ValidateID(s.id); err != nil {
		return nil, fmt.Errorf("%s: cluster %s: %w (chart value cluster.id)", flag, s.name, err)
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: list nodes: %w", flag, err)
	}
	for _, n := range nodes.Items {
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				s.cidrs = append(s.cidrs, p)
			}
		}
	}
	return s, nil
}

// readerName is the ServiceAccount (and its binding and token) a cluster
// grants one remote.
func readerName(remote string) string { return clustermesh.ReaderName + "-" + remote }

// grant lets to read from: in from, a ServiceAccount bound to the
// read-only ClusterRole and its token; in to, the kubeconfig with that
// token under from's name in the mesh Secret.
func grant(ctx context.Context, namespace string, from, to *meshSide) error {
	c := from.client
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: clustermesh.ReaderName},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "nodes", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"membrane.io"}, Resources: []string{"membraneidentities"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := c.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("cluster %s: create cluster role %s: %w", from.name, role.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("cluster %s: update cluster role %s: %w", from.name, role.Name, err)
	}
	name := readerName(to.name)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := c.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster %s: create service account %s: %w", from.name, name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clustermesh.ReaderName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}},
	}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster %s: create cluster role binding %s: %w", from.name, name, err)
	}
	tokenSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: map[string]string{corev1.ServiceAccountNameKey: name}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}
	if _, err := c.CoreV1().Secrets(namespace).Create(ctx, tokenSecret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster %s: create token secret %s: %w", from.name, name, err)
	}
	var token []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		sec, err := c.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(sec.Data[corev1.ServiceAccountTokenKey]) > 0 {
			token = sec.Data[corev1.ServiceAccountTokenKey]
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s: token secret %s/%s has no token after 30s (is the token controller of kube-controller-manager running?)", from.name, namespace, name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	ca := from.rest.CAData
	if len(ca) == 0 && from.rest.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(from.rest.CAFile); err != nil {
			return fmt.Errorf("cluster %s: read CA: %w", from.name, err)
		}
	}
	kc, err := clientcmd.Write(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{from.name: {Server: from.server, CertificateAuthorityData: ca}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{name: {Token: string(token)}},
		Contexts:       map[string]*clientcmdapi.Context{from.name: {Cluster: from.name, AuthInfo: name}},
		CurrentContext: from.name,
	})
	if err != nil {
		return fmt.Errorf("kubeconfig of %s: %w", from.name, err)
	}
	return setMeshKey(ctx, to.client, namespace, from.name, kc, to.name)
}

// setMeshKey sets (kc != nil) or removes one remote's kubeconfig in the
// mesh Secret of the cluster of client.
func setMeshKey(ctx context.Context, client kubernetes.Interface, namespace, remote string, kc []byte, cluster string) error {
	secrets := client.CoreV1().Secrets(namespace)
	for range 5 {
		sec, err := secrets.Get(ctx, clustermesh.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if kc == nil {
				return nil
			}
			sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: clustermesh.SecretName, Namespace: namespace}, Data: map[string][]byte{remote: kc}}
			if _, err = secrets.Create(ctx, sec, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
				continue
			}
		} else if err == nil {
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			if kc == nil {
				delete(sec.Data, remote)
			} else {
				sec.Data[remote] = kc
			}
			if _, err = secrets.Update(ctx, sec, metav1.UpdateOptions{}); apierrors.IsConflict(err) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("cluster %s: secret %s/%s: %w", cluster, namespace, clustermesh.SecretName, err)
		}
		return nil
	}
	return fmt.Errorf("cluster %s: secret %s/%s: changed concurrently, try again", cluster, namespace, clustermesh.SecretName)
}

// revoke undoes grant(from, to): to forgets from, and from deletes the
// credentials it gave to.
func revoke(ctx context.Context, namespace string, from, to *meshSide) error {
	var errs []error
	if err := setMeshKey(ctx, to.client, namespace, from.name, nil, to.name); err != nil {
		errs = append(errs, err)
	}
	name := readerName(to.name)
	c := from.client
	for _, del := range []func() error{
		func() error { return c.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error { return c.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error { return c.CoreV1().ServiceAccounts(namespace).Delete(ctx, name, metav1.DeleteOptions{}) },
	} {
		if err := del(); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("cluster %s: %w", from.name, err))
		}
	}
	return errors.Join(errs...)
}

func printClusterMesh(g *globals, lists []agentapi.ClusterMeshStatus) error {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, l := range lists {
		id := "none (not in a mesh)"
		if l.Status.ID != 0 {
			id = strconv.Itoa(l.Status.ID)
		}
		fmt.Fprintf(w, "Node: %s\tcluster %s, id %s, cache TTL %s\n", l.Node, l.Status.Cluster, id, l.Status.CacheTTL)
		if len(l.Status.Remotes) == 0 {
			fmt.Fprintln(w, "  (no remote clusters)")
			fmt.Fprintln(w)
			continue
		}
		fmt.Fprintln(w, "REMOTE\tCONNECTED\tLAST SYNC\tGLOBAL SERVICES\tREMOTE ENDPOINTS\tNODES\tERROR")
		for _, r := range l.Status.Remotes {
			connected := "yes"
			switch {
			case r.Withdrawn:
				connected = "no (backends withdrawn)"
			case !r.Connected:
				connected = "no"
			}
			last := "never"
			if !r.LastSync.IsZero() {
				last = time.Since(r.LastSync).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Cluster, connected, last, r.GlobalServices, r.RemoteEndpoints, r.Nodes, r.Error)
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

package localcluster

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// underlayUser is the identity that routes PodCIDRs between nodes, the part a
// cloud's route controller plays for a real cluster.
const underlayUser = "membrane-dev:underlay"

// agentUser and operatorUser are the identities of the node agents and the
// operator the harness starts.
const (
	agentUser    = "membrane-agent"
	operatorUser = "membrane-operator"
)

// applyRBAC grants the harness's own identities what they need.
func applyRBAC(ctx context.Context, c kubernetes.Interface) error {
	read := []string{"get", "list", "watch"}
	for user, rules := range map[string][]rbacv1.PolicyRule{
		underlayUser: {{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: read}},
		agentUser: {
			{APIGroups: []string{""}, Resources: []string{"nodes", "services", "pods", "namespaces"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: read},
			// Publishes its node's WireGuard public key (an annotation) and
			// reports unusable peers as Events on their Nodes.
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			{APIGroups: []string{"membrane.io"}, Resources: []string{"membraneidentities", "membranenetworkpolicies", "membraneclusterwidenetworkpolicies"}, Verbs: read},
			// Authenticates and authorizes its API's clients as a kubelet
			// does (its node annotation holds the API certificate's
			// fingerprint: the nodes patch above).
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
		},
		operatorUser: {
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "nodes"}, Verbs: read},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			{APIGroups: []string{"membrane.io"}, Resources: []string{"membraneidentities"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
			{APIGroups: []string{"membrane.io"}, Resources: []string{"membranenetworkpolicies", "membraneclusterwidenetworkpolicies"}, Verbs: read},
			{APIGroups: []string{"membrane.io"}, Resources: []string{"membranenetworkpolicies/status", "membraneclusterwidenetworkpolicies/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
		},
	} {
		if err := bindClusterRole(ctx, c, user, rules); err != nil {
			return err
		}
	}
	// The agent reads the cluster's client CA when --api-client-ca is not
	// given (the API server's own role for that).
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: agentUser + ":authentication-reader", Namespace: "kube-system"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: agentUser}},
	}
	if _, err := c.RbacV1().RoleBindings("kube-system").Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create role binding kube-system/%s: %w", binding.Name, err)
	}
	return nil
}

// bindClusterRole creates a cluster role named after user with rules, bound
// to that user.
func bindClusterRole(ctx context.Context, c kubernetes.Interface, user string, rules []rbacv1.PolicyRule) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role %s: %w", role.Name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role binding %s: %w", binding.Name, err)
	}
	return nil
}

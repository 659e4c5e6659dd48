package localcluster

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
)

// underlayUser is the identity that routes PodCIDRs between nodes, the part a
// cloud's route controller plays for a real cluster.
const underlayUser = "membrane-dev:underlay"

// agentUser and operatorUser are the identities of the node agents and the
// operator the harness starts; they get the chart's cluster roles of the same
// names.
const (
	agentUser    = "membrane-agent"
	operatorUser = "membrane-operator"
)

// applyRBAC creates the rendered chart's cluster roles and the harness's own
// underlay role, and binds each to the harness identity of its name (the
// chart's bindings name ServiceAccounts of pods the harness does not run).
func applyRBAC(ctx context.Context, c kubernetes.Interface, objs []chart.Object) error {
	roles, err := chartClusterRoles(objs)
	if err != nil {
		return err
	}
	roles[underlayUser] = underlayRole()
	for user, role := range roles {
		if err := bindClusterRole(ctx, c, user, role); err != nil {
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

// underlayRole lets the underlay identity read the nodes' PodCIDRs.
func underlayRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: underlayUser},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}},
	}
}

// chartClusterRoles decodes the rendered chart's ClusterRoles of the
// agents and the operator, by name.
func chartClusterRoles(objs []chart.Object) (map[string]*rbacv1.ClusterRole, error) {
	roles := map[string]*rbacv1.ClusterRole{}
	for _, name := range []string{agentUser, operatorUser} {
		o, err := chartObject(objs, "ClusterRole", name)
		if err != nil {
			return nil, err
		}
		role := &rbacv1.ClusterRole{}
		if err := yaml.UnmarshalStrict([]byte(o.YAML), role); err != nil {
			return nil, fmt.Errorf("the rendered Membrane chart: ClusterRole %s: %w", name, err)
		}
		roles[name] = role
	}
	return roles, nil
}

// bindClusterRole creates role, named after user, and binds it to that user.
func bindClusterRole(ctx context.Context, c kubernetes.Interface, user string, role *rbacv1.ClusterRole) error {
	role = &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: role.Rules}
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

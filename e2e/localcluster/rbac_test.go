package localcluster

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// allows reports whether one of role's rules grants verb on resource of group.
func allows(role *rbacv1.ClusterRole, group, resource, verb string) bool {
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// TestChartClusterRoles checks that the chart's roles, which the harness
// binds its agents and operator to, grant what those components do.
func TestChartClusterRoles(t *testing.T) {
	roles, err := chartClusterRoles(renderedChart(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		role, group, resource, verb string
	}{
		{agentUser, "", "pods", "watch"},
		{agentUser, "", "services", "list"},
		{agentUser, "discovery.k8s.io", "endpointslices", "watch"},
		{agentUser, "networking.k8s.io", "networkpolicies", "watch"},
		{agentUser, "", "nodes", "patch"},
		{agentUser, "", "events", "create"},
		{agentUser, "membrane.io", "membraneidentities", "watch"},
		{agentUser, "membrane.io", "membraneclusterwidenetworkpolicies", "list"},
		{operatorUser, "membrane.io", "membraneidentities", "create"},
		{operatorUser, "membrane.io", "membraneidentities", "delete"},
		{operatorUser, "membrane.io", "membranenetworkpolicies/status", "update"},
		{operatorUser, "", "events", "create"},
		{operatorUser, "coordination.k8s.io", "leases", "update"},
	} {
		role, ok := roles[c.role]
		if !ok {
			t.Fatalf("no ClusterRole %s in the chart", c.role)
		}
		if !allows(role, c.group, c.resource, c.verb) {
			t.Errorf("ClusterRole %s does not allow %s %s.%s", c.role, c.verb, c.resource, c.group)
		}
	}
	if allows(roles[agentUser], "membrane.io", "membraneidentities", "create") {
		t.Error("ClusterRole membrane-agent may create identities; only the operator allocates them")
	}
}

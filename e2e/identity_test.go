package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// TestIdentities: membrane-operator gives pods one numeric identity per set
// of security labels, shared by replicas, and deletes it when unused.
func TestIdentities(t *testing.T) {
	k := cluster(t)
	const ns = "ident"
	deployTutorial(t, k, ns)
	find := func(app string) (string, error) {
		var list v1alpha1.MembraneIdentityList
		if err := json.Unmarshal([]byte(k.must("", "get", "membraneidentities", "-o", "json")), &list); err != nil {
			return "", err
		}
		var found []string
		for _, id := range list.Items {
			if id.SecurityLabels["k8s:app"] == app && id.SecurityLabels["k8s:io.kubernetes.pod.namespace"] == ns {
				found = append(found, id.Name)
			}
		}
		if len(found) != 1 {
			return "", fmt.Errorf("%d identities for app=%s in %s: %v", len(found), app, ns, found)
		}
		return found[0], nil
	}
	var backend, frontend string
	eventually(t, 30*time.Second, "one identity per workload", func() error {
		var err error
		if backend, err = find("backend"); err != nil {
			return err
		}
		frontend, err = find("frontend")
		return err
	})
	for _, id := range []string{backend, frontend} {
		if n, err := strconv.Atoi(id); err != nil || n < 256 || n > 65535 {
			t.Fatalf("identity %q is outside the cluster range 256-65535", id)
		}
	}
	if backend == frontend {
		t.Fatalf("backend and frontend share identity %s", backend)
	}
	t.Logf("backend identity %s, frontend identity %s", backend, frontend)

	k.must("", "-n", ns, "delete", "deployment", "frontend", "--wait=true", "--timeout=60s")
	eventually(t, 60*time.Second, "the unused frontend identity deleted", func() error {
		if _, err := k.run(t.Context(), "", "get", "membraneidentity", frontend); err == nil {
			return fmt.Errorf("identity %s still exists", frontend)
		}
		return nil
	})
	if got, err := find("backend"); err != nil || got != backend {
		t.Fatalf("the backend identity changed: %s, %v (was %s)", got, err, backend)
	}
}

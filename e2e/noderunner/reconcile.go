package noderunner

import (
	"sort"

	"k8s.io/apimachinery/pkg/types"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// liveness is what a starting node runner finds alive on the node.
type liveness struct {
	// Procs holds the recorded processes that still run (same PID and
	// start time).
	Procs map[runtime.Process]bool
	// Sandboxes holds the recorded pod network namespaces still pinned.
	Sandboxes map[string]bool
}

// startPlan is what a starting node runner does with the pods an earlier run
// left: take over those still wanted, tear down the rest.
type startPlan struct {
	Adopt    []adoption
	TearDown []teardown
}

// adoption takes a pod over as it runs.
type adoption struct {
	Record podRecord
	// Alive tells, per container name, whether its recorded process still
	// runs. A container recorded as running whose process died is restarted
	// per the pod's restart policy, as if it had just exited.
	Alive map[string]bool
}

// teardown removes what an earlier run left of a pod: it kills Kill (by PID,
// checking the start time), releases the network (CNI DEL) and removes the
// pod's cgroup and files. A pod that the API still binds to the node then
// starts afresh.
type teardown struct {
	Record podRecord
	Reason string
	Kill   []runtime.Process
}

// Reasons for a teardown.
const (
	reasonPodGone     = "the pod is gone from the API server"
	reasonSandboxGone = "the pod's network namespace is gone"
	reasonNoSandbox   = "the pod's network was never set up"
)

// planStart decides, per pod an earlier run recorded, whether to adopt or
// tear it down. bound holds the UIDs of the pods the API server binds to
// this node (deleting ones included: an adopted pod being deleted is then
// terminated gracefully). It reads nothing but its arguments.
func planStart(records []podRecord, bound map[types.UID]bool, live liveness) startPlan {
	var plan startPlan
	sorted := append([]podRecord(nil), records...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].UID < sorted[j].UID })
	for _, r := range sorted {
		var alive []runtime.Process
		for _, p := range r.processes() {
			if live.Procs[p] {
				alive = append(alive, p)
			}
		}
		reason := ""
		switch {
		case !bound[r.UID]:
			reason = reasonPodGone
		case r.Sandbox == nil:
			reason = reasonNoSandbox
		case r.Sandbox.Netns != "" && !live.Sandboxes[r.Sandbox.Netns]:
			reason = reasonSandboxGone
		}
		if reason != "" {
			plan.TearDown = append(plan.TearDown, teardown{Record: r, Reason: reason, Kill: alive})
			continue
		}
		a := adoption{Record: r, Alive: map[string]bool{}}
		for _, c := range append(append([]containerRecord{}, r.Inits...), r.Containers...) {
			a.Alive[c.Name] = c.Process != nil && live.Procs[*c.Process]
		}
		plan.Adopt = append(plan.Adopt, a)
	}
	return plan
}

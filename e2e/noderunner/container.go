package noderunner

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

const (
	backoffStart = time.Second
	backoffMax   = 30 * time.Second
	// A container that ran this long without failing restarts without delay.
	backoffReset = time.Minute
)

// container is the node runner's record of one container of a pod.
type container struct {
	spec    corev1.Container
	init    bool
	imageID string

	run       *runtime.Container // nil when not running
	instance  int                // count of starts, names the log file
	startedAt time.Time
	restarts  int32

	ready      bool
	started    bool // startup probe passed (or none)
	probeState map[string]*probeState

	lastTerm  *corev1.ContainerStateTerminated
	waiting   *corev1.ContainerStateWaiting
	backoff   time.Duration
	nextStart time.Time
	succeeded bool // init container finished with 0
}

// probeState counts consecutive results of one probe.
type probeState struct {
	next      time.Time
	successes int32
	failures  int32
}

func (c *container) status() corev1.ContainerStatus {
	st := corev1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      c.imageID,
		RestartCount: c.restarts,
		Ready:        c.ready,
		LastTerminationState: corev1.ContainerState{
			Terminated: c.lastTerm,
		},
	}
	started := c.started
	switch {
	case c.run != nil:
		st.ContainerID = "membrane://" + c.id()
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
		st.Started = &started
	case c.waiting != nil:
		st.State.Waiting = c.waiting
		st.Started = new(bool)
	case c.lastTerm != nil:
		st.State.Terminated = c.lastTerm
		st.LastTerminationState = corev1.ContainerState{}
		st.Started = new(bool)
	default:
		st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		st.Started = new(bool)
	}
	return st
}

// id names the current instance.
func (c *container) id() string {
	return c.spec.Name + "-" + strconv.Itoa(c.instance)
}

// nextBackoff is the delay before a restart: none for the first failure
// (as the kubelet restarts a crashed container at once) and after a run of
// at least backoffReset, then doubling from backoffStart up to the cap.
func (c *container) nextBackoff(ranFor time.Duration) time.Duration {
	switch {
	case ranFor >= backoffReset:
		c.backoff = 0
	case c.backoff == 0 && c.restarts == 0:
		// The first failure: restart at once.
	case c.backoff == 0:
		c.backoff = backoffStart
	default:
		c.backoff = min(2*c.backoff, backoffMax)
	}
	return c.backoff
}

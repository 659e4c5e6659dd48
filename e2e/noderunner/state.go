package noderunner

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
)

// recordFile is the name of a pod's record in its state dir.
const recordFile = "pod.json"

// podRecord is what the node runner keeps on disk about a pod so that, after
// a restart, it can take the pod over as it runs.
type podRecord struct {
	UID       types.UID `json:"uid"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	// Sandbox is nil until the pod's network is set up.
	Sandbox    *sandbox          `json:"sandbox,omitempty"`
	StartTime  time.Time         `json:"startTime"`
	Inits      []containerRecord `json:"initContainers,omitempty"`
	Containers []containerRecord `json:"containers,omitempty"`
}

// containerRecord is a container's part of a podRecord.
type containerRecord struct {
	Name     string `json:"name"`
	ImageID  string `json:"imageID,omitempty"`
	Instance int    `json:"instance"`
	Restarts int32  `json:"restarts"`
	// Process is set while an instance runs.
	Process   *runtime.Process `json:"process,omitempty"`
	StartedAt time.Time        `json:"startedAt"`
	Ready     bool             `json:"ready"`
	Started   bool             `json:"started"`
	Succeeded bool             `json:"succeeded,omitempty"`
	// Probes counts consecutive results per probe kind.
	Probes    map[string]probeCounts           `json:"probes,omitempty"`
	LastTerm  *corev1.ContainerStateTerminated `json:"lastTerm,omitempty"`
	Waiting   *corev1.ContainerStateWaiting    `json:"waiting,omitempty"`
	Backoff   time.Duration                    `json:"backoff,omitempty"`
	NextStart time.Time                        `json:"nextStart"`
}

type probeCounts struct {
	Successes int32 `json:"successes"`
	Failures  int32 `json:"failures"`
}

// processes returns the recorded processes of the pod's running containers.
func (r podRecord) processes() []runtime.Process {
	var out []runtime.Process
	for _, c := range append(append([]containerRecord{}, r.Inits...), r.Containers...) {
		if c.Process != nil {
			out = append(out, *c.Process)
		}
	}
	return out
}

// readRecord reads the record in a pod's state dir.
func readRecord(dir string) (podRecord, error) {
	path := filepath.Join(dir, recordFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return podRecord{}, fmt.Errorf("read pod record: %w", err)
	}
	var r podRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return podRecord{}, fmt.Errorf("parse pod record %s: %w", path, err)
	}
	switch {
	case r.UID == "":
		return podRecord{}, fmt.Errorf("pod record %s: uid is empty", path)
	case string(r.UID) != filepath.Base(dir):
		return podRecord{}, fmt.Errorf("pod record %s: uid %q does not match its directory", path, r.UID)
	case r.Sandbox != nil && r.Sandbox.Netns != "" && !filepath.IsAbs(r.Sandbox.Netns):
		return podRecord{}, fmt.Errorf("pod record %s: sandbox.netns %q is not an absolute path", path, r.Sandbox.Netns)
	}
	return r, nil
}

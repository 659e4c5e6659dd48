package noderunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/membrane-mesh/membrane/e2e/cgroups"
	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
	"github.com/membrane-mesh/membrane/mesh/statefile"
)

const killTimeout = 5 * time.Second

// recoverPods takes over what an earlier run of this node runner left: pods
// the API server still binds to the node keep running as they are (same
// processes, network namespace, IP and status); the rest is torn down. It
// runs before the pod informer starts, which then finds the adopted pods'
// workers in place; startAdopted runs them.
func (m *Manager) recoverPods(ctx context.Context) error {
	podsDir := filepath.Join(m.cfg.StateDir, "pods")
	entries, err := os.ReadDir(podsDir)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", podsDir, err)
	}
	list, err := m.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", m.cfg.NodeName).String(),
	})
	if err != nil {
		return fmt.Errorf("list pods bound to %s: %w", m.cfg.NodeName, err)
	}
	apiPods := map[types.UID]*corev1.Pod{}
	bound := map[types.UID]bool{}
	for i := range list.Items {
		p := &list.Items[i]
		apiPods[p.UID], bound[p.UID] = p, true
	}

	var records []podRecord
	known := map[string]bool{}
	for _, e := range entries {
		dir := filepath.Join(podsDir, e.Name())
		known[e.Name()] = true
		rec, err := readRecord(dir)
		if err != nil {
			m.log.Warn("removing pod left without a usable record", "uid", e.Name(), "error", err)
			rec = podRecord{UID: types.UID(e.Name()), Namespace: "unknown", Name: e.Name()}
			if err := m.tearDown(ctx, teardown{Record: rec, Reason: "no usable record"}); err != nil {
				return err
			}
			continue
		}
		records = append(records, rec)
	}
	// A pod cgroup without a state dir: left by a run that crashed while
	// setting the pod up.
	cgEntries, _ := os.ReadDir(filepath.Join(m.cfg.CgroupDir, "pods"))
	for _, e := range cgEntries {
		if e.IsDir() && !known[e.Name()] {
			if err := cgroups.Remove(filepath.Join(m.cfg.CgroupDir, "pods", e.Name())); err != nil {
				return err
			}
		}
	}

	plan := planStart(records, bound, observeLiveness(records))
	for _, td := range plan.TearDown {
		m.log.Info("tearing down pod left by an earlier run", "pod", td.Record.Namespace+"/"+td.Record.Name, "uid", td.Record.UID,
			"reason", td.Reason, "killing", len(td.Kill))
		if err := m.tearDown(ctx, td); err != nil {
			return err
		}
	}
	for _, a := range plan.Adopt {
		m.adopt(apiPods[a.Record.UID], a)
	}
	return nil
}

// observeLiveness looks at the processes and namespaces records name.
func observeLiveness(records []podRecord) liveness {
	live := liveness{Procs: map[runtime.Process]bool{}, Sandboxes: map[string]bool{}}
	for _, r := range records {
		for _, p := range r.processes() {
			live.Procs[p] = p.Alive()
		}
		if r.Sandbox != nil && r.Sandbox.Netns != "" {
			live.Sandboxes[r.Sandbox.Netns] = netnsPinned(r.Sandbox.Netns)
		}
	}
	return live
}

// netnsPinned reports whether path is a mounted network namespace (and not
// a file left where one was, as after a reboot).
func netnsPinned(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// tearDown kills a left pod's processes, releases its network and removes
// its cgroup and files.
func (m *Manager) tearDown(ctx context.Context, td teardown) error {
	r := td.Record
	for _, p := range td.Kill {
		if err := runtime.Kill(p, killTimeout); err != nil {
			return fmt.Errorf("tear down pod %s/%s: %w", r.Namespace, r.Name, err)
		}
	}
	if err := cgroups.Remove(filepath.Join(m.cfg.CgroupDir, "pods", string(r.UID))); err != nil {
		return err
	}
	if r.Sandbox == nil || r.Sandbox.Netns != "" {
		stub := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: r.UID, Name: r.Name, Namespace: r.Namespace}}
		network := ""
		if r.Sandbox != nil {
			network = r.Sandbox.Network
		}
		if err := m.net.tearDown(ctx, stub, network); err != nil {
			m.log.Warn("tear down pod network", "uid", r.UID, "error", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(m.cfg.StateDir, "pods", string(r.UID))); err != nil {
		return fmt.Errorf("remove pod dir: %w", err)
	}
	return nil
}

// adopt starts a worker for a pod that runs on from an earlier run.
func (m *Manager) adopt(pod *corev1.Pod, a adoption) {
	w := m.newWorker(pod)
	w.restore(pod, a)
	w.killStrays()
	adopted := 0
	for _, c := range append(append([]*container{}, w.inits...), w.containers...) {
		if c.run != nil {
			adopted++
		}
	}
	w.log.Info("pod adopted", "podIP", w.sb.IP, "running", adopted)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.workers[pod.UID] = w
	m.adopted = append(m.adopted, w)
}

// startAdopted starts the adopted pods' workers, once the caches they read
// (services, for a restarted container's environment) have synced.
func (m *Manager) startAdopted(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.adopted {
		m.startWorker(ctx, w, w.current())
	}
	m.adopted = nil
}

// restore sets the worker's state from the record, taking over the
// containers whose processes still run.
func (w *podWorker) restore(pod *corev1.Pod, a adoption) {
	r := a.Record
	sb := *r.Sandbox
	w.sb = &sb
	w.startTime = r.StartTime
	byName := map[string]containerRecord{}
	for _, c := range append(append([]containerRecord{}, r.Inits...), r.Containers...) {
		byName[c.Name] = c
	}
	now := time.Now()
	add := func(spec corev1.Container, init bool) *container {
		c := &container{spec: spec, init: init, probeState: map[string]*probeState{}}
		cr, ok := byName[spec.Name]
		if !ok {
			return c
		}
		c.imageID, c.instance, c.restarts = cr.ImageID, cr.Instance, cr.Restarts
		c.startedAt, c.ready, c.started, c.succeeded = cr.StartedAt, cr.Ready, cr.Started, cr.Succeeded
		c.lastTerm, c.waiting, c.backoff, c.nextStart = cr.LastTerm, cr.Waiting, cr.Backoff, cr.NextStart
		for kind, pc := range cr.Probes {
			c.probeState[kind] = &probeState{successes: pc.Successes, failures: pc.Failures}
		}
		if cr.Process == nil {
			return c
		}
		if a.Alive[spec.Name] {
			run, err := w.m.rt.Adopt(filepath.Join(w.dir, "containers", c.id()), *cr.Process)
			if err == nil {
				c.run = run
				w.log.Info("container adopted", "container", spec.Name, "pid", run.Pid())
				return c
			}
			w.log.Warn("adopt container", "container", spec.Name, "error", err)
		}
		// It ended while no runner watched it.
		w.exited(pod, c, -1, now)
		return c
	}
	for _, s := range pod.Spec.InitContainers {
		w.inits = append(w.inits, add(s, true))
	}
	for _, s := range pod.Spec.Containers {
		w.containers = append(w.containers, add(s, false))
	}
}

// killStrays kills processes in the pod's cgroup that belong to none of its
// adopted containers (a container started just before a crash, before the
// record named it). Processes exec'd into a container share its PID
// namespace and are kept.
func (w *podWorker) killStrays() {
	keep := map[string]bool{}
	for _, c := range append(append([]*container{}, w.inits...), w.containers...) {
		if c.run == nil {
			continue
		}
		if ns, err := runtime.PidNamespace(c.run.Pid()); err == nil {
			keep[ns] = true
		}
	}
	raw, err := os.ReadFile(filepath.Join(w.cgroup, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(raw)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		ns, err := runtime.PidNamespace(pid)
		if err != nil || keep[ns] {
			continue
		}
		p, err := runtime.ProcessOf(pid)
		if err != nil {
			continue
		}
		w.log.Info("killing a process no container of the pod owns", "pid", pid)
		if err := runtime.Kill(p, killTimeout); err != nil {
			w.log.Warn("kill stray process", "pid", pid, "error", err)
		}
	}
}

// record is the worker's state as written to disk.
func (w *podWorker) record(pod *corev1.Pod) podRecord {
	r := podRecord{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name, StartTime: w.startTime}
	if w.sb != nil {
		sb := *w.sb
		r.Sandbox = &sb
	}
	rec := func(c *container) containerRecord {
		cr := containerRecord{
			Name: c.spec.Name, ImageID: c.imageID, Instance: c.instance, Restarts: c.restarts,
			StartedAt: c.startedAt, Ready: c.ready, Started: c.started, Succeeded: c.succeeded,
			LastTerm: c.lastTerm, Waiting: c.waiting, Backoff: c.backoff, NextStart: c.nextStart,
		}
		if c.run != nil {
			select {
			case <-c.run.Done():
			default:
				p := c.run.Process()
				cr.Process = &p
			}
		}
		if len(c.probeState) > 0 {
			cr.Probes = map[string]probeCounts{}
			for kind, ps := range c.probeState {
				cr.Probes[kind] = probeCounts{Successes: ps.successes, Failures: ps.failures}
			}
		}
		return cr
	}
	for _, c := range w.inits {
		r.Inits = append(r.Inits, rec(c))
	}
	for _, c := range w.containers {
		r.Containers = append(r.Containers, rec(c))
	}
	return r
}

// persist writes the worker's record when it changed.
func (w *podWorker) persist() {
	pod := w.current()
	if pod == nil {
		return // being torn down
	}
	if _, err := os.Stat(w.dir); errors.Is(err, os.ErrNotExist) {
		return // nothing set up yet
	}
	raw, err := json.MarshalIndent(w.record(pod), "", "  ")
	if err != nil {
		w.log.Error("encode pod record", "error", err)
		return
	}
	if bytes.Equal(raw, w.lastRecord) {
		return
	}
	if err := statefile.Write(filepath.Join(w.dir, recordFile), raw); err != nil {
		w.log.Error("persist pod record", "error", err)
		return
	}
	w.lastRecord = raw
}

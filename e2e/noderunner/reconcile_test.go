package noderunner

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/membrane-mesh/membrane/e2e/noderunner/runtime"
	"github.com/membrane-mesh/membrane/mesh/statefile"
)

func TestPlanStart(t *testing.T) {
	proc := func(pid int) *runtime.Process { return &runtime.Process{PID: pid, StartTime: uint64(1000 + pid)} }
	sb := func(uid string) *sandbox {
		return &sandbox{Netns: "/run/netns/" + uid, IP: netip.MustParseAddr("10.0.0.1")}
	}
	rec := func(uid string, s *sandbox, cs ...containerRecord) podRecord {
		return podRecord{UID: types.UID(uid), Namespace: "ns", Name: "pod-" + uid, Sandbox: s, Containers: cs}
	}
	running := func(name string, pid int) containerRecord {
		return containerRecord{Name: name, Instance: 1, Process: proc(pid)}
	}
	exited := containerRecord{Name: "done", Instance: 2, LastTerm: &corev1.ContainerStateTerminated{ExitCode: 1}}
	hostNet := &sandbox{IP: netip.MustParseAddr("192.168.0.2")}

	// live builds what the runner finds alive: processes by PID, pinned
	// namespaces by pod UID.
	live := func(pids []int, netns ...string) liveness {
		l := liveness{Procs: map[runtime.Process]bool{}, Sandboxes: map[string]bool{}}
		for _, pid := range pids {
			l.Procs[*proc(pid)] = true
		}
		for _, uid := range netns {
			l.Sandboxes["/run/netns/"+uid] = true
		}
		return l
	}
	bound := func(uids ...string) map[types.UID]bool {
		m := map[types.UID]bool{}
		for _, u := range uids {
			m[types.UID(u)] = true
		}
		return m
	}

	for _, tc := range []struct {
		name    string
		records []podRecord
		bound   map[types.UID]bool
		live    liveness
		want    startPlan
	}{{
		name:  "nothing recorded: nothing to do, whatever the API holds",
		bound: bound("a"),
		live:  live(nil),
		want:  startPlan{},
	}, {
		name:    "bound and alive: adopted as is",
		records: []podRecord{rec("a", sb("a"), running("app", 10), running("side", 11))},
		bound:   bound("a"),
		live:    live([]int{10, 11}, "a"),
		want: startPlan{Adopt: []adoption{{
			Record: rec("a", sb("a"), running("app", 10), running("side", 11)),
			Alive:  map[string]bool{"app": true, "side": true},
		}}},
	}, {
		name:    "bound, one process died: adopted, the dead container marked for restart",
		records: []podRecord{rec("a", sb("a"), running("app", 10), running("side", 11), exited)},
		bound:   bound("a"),
		live:    live([]int{11}, "a"),
		want: startPlan{Adopt: []adoption{{
			Record: rec("a", sb("a"), running("app", 10), running("side", 11), exited),
			Alive:  map[string]bool{"app": false, "side": true, "done": false},
		}}},
	}, {
		name:    "a recycled PID (other start time) counts as dead",
		records: []podRecord{rec("a", sb("a"), running("app", 10))},
		bound:   bound("a"),
		live:    liveness{Procs: map[runtime.Process]bool{{PID: 10, StartTime: 1}: true}, Sandboxes: map[string]bool{"/run/netns/a": true}},
		want: startPlan{Adopt: []adoption{{
			Record: rec("a", sb("a"), running("app", 10)),
			Alive:  map[string]bool{"app": false},
		}}},
	}, {
		name:    "deleted while the runner was down: torn down, live processes killed by PID",
		records: []podRecord{rec("gone", sb("gone"), running("app", 10), running("side", 11), exited)},
		bound:   bound("other"),
		live:    live([]int{10}, "gone"),
		want: startPlan{TearDown: []teardown{{
			Record: rec("gone", sb("gone"), running("app", 10), running("side", 11), exited),
			Reason: reasonPodGone,
			Kill:   []runtime.Process{*proc(10)},
		}}},
	}, {
		name:    "deleted and nothing alive: torn down, nothing to kill",
		records: []podRecord{rec("gone", sb("gone"), running("app", 10))},
		bound:   bound(),
		live:    live(nil),
		want: startPlan{TearDown: []teardown{{
			Record: rec("gone", sb("gone"), running("app", 10)),
			Reason: reasonPodGone,
		}}},
	}, {
		name:    "network namespace gone (a reboot): torn down to start afresh",
		records: []podRecord{rec("a", sb("a"), running("app", 10))},
		bound:   bound("a"),
		live:    live([]int{10}),
		want: startPlan{TearDown: []teardown{{
			Record: rec("a", sb("a"), running("app", 10)),
			Reason: reasonSandboxGone,
			Kill:   []runtime.Process{*proc(10)},
		}}},
	}, {
		name:    "network never set up: torn down to start afresh",
		records: []podRecord{rec("a", nil)},
		bound:   bound("a"),
		live:    live(nil),
		want:    startPlan{TearDown: []teardown{{Record: rec("a", nil), Reason: reasonNoSandbox}}},
	}, {
		name:    "host network pods need no namespace",
		records: []podRecord{rec("h", hostNet, running("app", 10))},
		bound:   bound("h"),
		live:    live([]int{10}),
		want: startPlan{Adopt: []adoption{{
			Record: rec("h", hostNet, running("app", 10)),
			Alive:  map[string]bool{"app": true},
		}}},
	}, {
		name: "init containers count too; pods in UID order",
		records: []podRecord{
			rec("b", sb("b"), running("app", 20)),
			{UID: "a", Namespace: "ns", Name: "pod-a", Sandbox: sb("a"), Inits: []containerRecord{running("init", 12)}, Containers: []containerRecord{{Name: "app"}}},
		},
		bound: bound("a"),
		live:  live([]int{12, 20}, "a", "b"),
		want: startPlan{
			Adopt: []adoption{{
				Record: podRecord{UID: "a", Namespace: "ns", Name: "pod-a", Sandbox: sb("a"), Inits: []containerRecord{running("init", 12)}, Containers: []containerRecord{{Name: "app"}}},
				Alive:  map[string]bool{"init": true, "app": false},
			}},
			TearDown: []teardown{{Record: rec("b", sb("b"), running("app", 20)), Reason: reasonPodGone, Kill: []runtime.Process{*proc(20)}}},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := planStart(tc.records, tc.bound, tc.live)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodRecordFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "uid-1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := readRecord(dir); err == nil {
		t.Fatal("read a missing record: no error")
	}
	for _, tc := range []struct{ name, content, wantErr string }{
		{"not JSON", "{", "parse pod record"},
		{"no uid", `{"namespace":"ns"}`, "uid is empty"},
		{"someone else's", `{"uid":"uid-2"}`, `uid "uid-2" does not match`},
		{"relative netns", `{"uid":"uid-1","sandbox":{"netns":"x","ip":"10.0.0.1"}}`, `sandbox.netns "x"`},
	} {
		if err := statefile.Write(filepath.Join(dir, recordFile), []byte(tc.content)); err != nil {
			t.Fatal(err)
		}
		_, err := readRecord(dir)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one naming %q", tc.name, err, tc.wantErr)
		}
	}

	// A worker's record reads back as written.
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	w := &podWorker{
		dir:       dir,
		startTime: start,
		sb:        &sandbox{Netns: "/run/netns/uid-1", IP: netip.MustParseAddr("10.1.2.3")},
		containers: []*container{{
			spec: corev1.Container{Name: "app"}, imageID: "img@1", instance: 3, restarts: 2,
			startedAt: start, ready: true, started: true,
			probeState: map[string]*probeState{"readiness": {successes: 4, next: start}},
			lastTerm:   &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error"},
		}},
	}
	pod := &corev1.Pod{}
	pod.UID, pod.Namespace, pod.Name = "uid-1", "ns", "p"
	w.pod = pod
	w.persist()
	got, err := readRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := podRecord{
		UID: "uid-1", Namespace: "ns", Name: "p", StartTime: start,
		Sandbox: &sandbox{Netns: "/run/netns/uid-1", IP: netip.MustParseAddr("10.1.2.3")},
		Containers: []containerRecord{{
			Name: "app", ImageID: "img@1", Instance: 3, Restarts: 2, StartedAt: start, Ready: true, Started: true,
			Probes:   map[string]probeCounts{"readiness": {Successes: 4}},
			LastTerm: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error"},
		}},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

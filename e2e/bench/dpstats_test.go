package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
)

// dpProbe reads what Membrane's datapath did on a cluster's nodes: the
// kernel's run time and run count of every program attached through the
// agents' pinned links (BPF_ENABLE_STATS held while the probe is open), the
// flow events written and conntrack entries created (membrane_polcnt), and
// the CPU time of the agents' cgroups (turning those events into flows, and
// their idle work).
type dpProbe struct {
	stats io.Closer
	nodes []nodeProbe
}

type nodeProbe struct {
	pinDir string
	maps   *bpfpolicy.Maps
	// agentCPU is the cpu.stat of the agent pod's cgroup.
	agentCPU string
}

// dpSnapshot is the probe's reading at one moment.
type dpSnapshot struct {
	progs     map[string]progStat // by program name, summed over the nodes
	events    uint64
	ctCreated uint64
	agentCPU  time.Duration // summed over the nodes
}

type progStat struct {
	runtime time.Duration
	runs    uint64
}

// openDPProbe opens the probe on the nodes' pin directories and the
// cgroup directories of their agents (in the same order).
func openDPProbe(pinDirs, agentCgroups []string) (*dpProbe, error) {
	if len(pinDirs) != len(agentCgroups) {
		return nil, fmt.Errorf("%d pin directories, %d agent cgroups", len(pinDirs), len(agentCgroups))
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run time statistics: %w", err)
	}
	p := &dpProbe{stats: stats}
	for i, dir := range pinDirs {
		cpu := filepath.Join(agentCgroups[i], "cpu.stat")
		if _, err := cgroupCPU(cpu); err != nil {
			p.Close()
			return nil, err
		}
		maps, err := bpfpolicy.OpenPinned(dir)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("open %s: %w", dir, err)
		}
		p.nodes = append(p.nodes, nodeProbe{pinDir: dir, maps: maps, agentCPU: cpu})
	}
	return p, nil
}

// cgroupCPU reads usage_usec from a cpu.stat file.
func cgroupCPU(statFile string) (time.Duration, error) {
	raw, err := os.ReadFile(statFile)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", statFile, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: usage_usec %q: %w", statFile, v, err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, fmt.Errorf("%s: no usage_usec", statFile)
}

func (p *dpProbe) Close() {
	for _, n := range p.nodes {
		n.maps.Close()
	}
	p.stats.Close()
}

func (p *dpProbe) snapshot() (dpSnapshot, error) {
	s := dpSnapshot{progs: map[string]progStat{}}
	for _, n := range p.nodes {
		ids, err := linkedPrograms(filepath.Join(n.pinDir, "links"))
		if err != nil {
			return s, err
		}
		for _, id := range ids {
			prog, err := ebpf.NewProgramFromID(id)
			if err != nil {
				continue // detached meanwhile
			}
			info, ierr := prog.Info()
			st, serr := prog.Stats()
			prog.Close()
			if ierr != nil || serr != nil {
				return s, fmt.Errorf("program %d: %w", id, errors.Join(ierr, serr))
			}
			ps := s.progs[info.Name]
			ps.runtime += st.Runtime
			ps.runs += st.RunCount
			s.progs[info.Name] = ps
		}
		c, err := n.maps.Counters()
		if err != nil {
			return s, err
		}
		s.events += c.EventsSent
		s.ctCreated += c.CTCreated
		cpu, err := cgroupCPU(n.agentCPU)
		if err != nil {
			return s, err
		}
		s.agentCPU += cpu
	}
	return s, nil
}

// linkedPrograms are the distinct programs of the pinned links in dir.
func linkedPrograms(dir string) ([]ebpf.ProgramID, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read pinned links: %w", err)
	}
	var ids []ebpf.ProgramID
	for _, e := range entries {
		// Links take no read-only flag (EINVAL).
		l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			continue // removed meanwhile, or not a link
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("pinned link %s: %w", e.Name(), err)
		}
		if !slices.Contains(ids, info.Program) {
			ids = append(ids, info.Program)
		}
	}
	return ids, nil
}

// dpDelta is what the datapath did during one run of an arm.
type dpDelta struct {
	progs     map[string]progStat
	events    uint64
	ctCreated uint64
	agentCPU  time.Duration
	conns     int // connections the load generator made (warm-up included)
}

func (a dpSnapshot) sub(b dpSnapshot, conns int) dpDelta {
	d := dpDelta{progs: map[string]progStat{}, events: a.events - b.events, ctCreated: a.ctCreated - b.ctCreated, agentCPU: a.agentCPU - b.agentCPU, conns: conns}
	for name, s := range a.progs {
		o := b.progs[name]
		if s.runs >= o.runs {
			d.progs[name] = progStat{runtime: s.runtime - o.runtime, runs: s.runs - o.runs}
		}
	}
	return d
}

func (d *dpDelta) add(o dpDelta) {
	if d.progs == nil {
		d.progs = map[string]progStat{}
	}
	for name, s := range o.progs {
		x := d.progs[name]
		x.runtime += s.runtime
		x.runs += s.runs
		d.progs[name] = x
	}
	d.events += o.events
	d.ctCreated += o.ctCreated
	d.agentCPU += o.agentCPU
	d.conns += o.conns
}

// nsPerConn is the time all probed programs took per connection.
func (d dpDelta) nsPerConn() float64 {
	var total time.Duration
	for _, s := range d.progs {
		total += s.runtime
	}
	return float64(total.Nanoseconds()) / float64(d.conns)
}

// String: per program ns per run and runs per connection; per connection the
// programs' total time, flow events, conntrack entries and the agents' CPU
// time.
func (d dpDelta) String() string {
	if d.conns == 0 {
		return "-"
	}
	var parts []string
	var total time.Duration
	names := make([]string, 0, len(d.progs))
	for name := range d.progs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := d.progs[name]
		if s.runs == 0 {
			continue
		}
		total += s.runtime
		parts = append(parts, fmt.Sprintf("%s %.0f ns x %.1f", name, float64(s.runtime.Nanoseconds())/float64(s.runs), float64(s.runs)/float64(d.conns)))
	}
	c := float64(d.conns)
	return fmt.Sprintf("%s; per conn: %.0f ns in programs, %.2f events, %.2f CT entries, %.0f ns agent CPU",
		strings.Join(parts, ", "), float64(total.Nanoseconds())/c, float64(d.events)/c, float64(d.ctCreated)/c, float64(d.agentCPU.Nanoseconds())/c)
}

package bench

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// report gathers the measurements of one run and prints them.
type report struct {
	sizes    []int
	load     load
	rounds   int
	rates    []rate
	programs map[string][]programSample
	notes    []string
	took     time.Duration
	// kubeProxyFlags as given on node 1.
	kubeProxyFlags string
	// probe reads the datapath of the cluster probed (Membrane's).
	probe    *dpProbe
	probed   *cluster
	datapath map[dpKey]dpDelta
}

type dpKey struct {
	arm  string
	size int
}

func (r *report) addDatapath(arm string, size int, d dpDelta) {
	if r.datapath == nil {
		r.datapath = map[dpKey]dpDelta{}
	}
	x := r.datapath[dpKey{arm, size}]
	x.add(d)
	r.datapath[dpKey{arm, size}] = x
}

type rate struct {
	arm   string
	size  int
	block string // the kube-proxy mode of the block of turns it ran in
	res   crrResult
	note  string
}

func (r *report) addRate(arm string, size int, block string, res crrResult, note string) {
	r.rates = append(r.rates, rate{arm: arm, size: size, block: block, res: res, note: note})
}

func (r *report) addProgram(arm string, s programSample) {
	if r.programs == nil {
		r.programs = map[string][]programSample{}
	}
	r.programs[arm] = append(r.programs[arm], s)
}

func (r *report) addNote(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// runs returns the measurements of an arm at a size, in one block or ("")
// in all.
func (r *report) runs(arm string, size int, block string) []rate {
	var out []rate
	for _, x := range r.rates {
		if x.arm == arm && x.size == size && (block == "" || x.block == block) {
			out = append(out, x)
		}
	}
	return out
}

// mean is an arm's mean rate at a size, in one block or ("") in all; 0 when
// not measured.
func (r *report) mean(arm string, size int, block string) float64 {
	runs := r.runs(arm, size, block)
	if len(runs) == 0 {
		return 0
	}
	sum := 0.0
	for _, x := range runs {
		sum += x.res.Rate
	}
	return sum / float64(len(runs))
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

var armOrder = []string{armMembrane, armDirect, armIPTables, armIPTablesLast, armDirectIPTables, armNFTables, armDirectNFTables,
	armDirectBare, armMembranePolicy, armDirectPolicy,
	armMembraneRR, armDirectRR, armIPTablesRR, armNFTablesRR, armDirectNFTRR, armDirectBareRR}

// ratioRow is one line of the ratio table; target "" or ">= 1.0x", for
// every size, or with largest for the run's largest size only (the
// targets set for 10,000 services).
type ratioRow struct {
	name, a, b, block, target string
	largest                   bool
}

// judged says whether the row's target applies at size (of a run whose
// largest size is last).
func (r ratioRow) judged(size, last int) bool {
	return r.target != "" && (!r.largest || size == last)
}

// ratioRows are the rows of the ratio table; the summary takes those with
// a target.
func ratioRows() []ratioRow {
	return []ratioRow{
		{"membrane / kube-proxy iptables", armMembrane, armIPTables, "iptables", ">= 3x", true},
		{"membrane / iptables, VIP rule last", armMembrane, armIPTablesLast, "iptables", ">= 3x", true},
		{"membrane / kube-proxy nftables", armMembrane, armNFTables, "nftables", ">= 1.0x", false},
		{"membrane / floor (bare cluster, direct)", armMembrane, armDirectBare, "nftables", ">= 0.95x", false},
		{"direct: membrane cluster / floor", armDirect, armDirectBare, "nftables", ">= 0.95x", false},
		{"membrane+policy / kube-proxy nftables", armMembranePolicy, armNFTables, blockPolicy, ">= 1.0x", false},
		{"membrane+policy / floor", armMembranePolicy, armDirectBare, blockPolicy, ">= 0.95x", false},
		{"direct+policy: membrane cluster / floor", armDirectPolicy, armDirectBare, blockPolicy, ">= 0.95x", false},
		{"cost of policy: membrane+policy / membrane", armMembranePolicy, armMembrane, "", "", false},
		{"nftables / floor", armNFTables, armDirectBare, "nftables", "", false},
		{"kept connection: membrane / iptables", armMembraneRR, armIPTablesRR, rrBlockIPTables, "", false},
		{"kept connection: membrane / nftables", armMembraneRR, armNFTablesRR, rrBlockNFTables, "", false},
		{"kept connection: membrane / floor", armMembraneRR, armDirectBareRR, rrBlockNFTables, "", false},
		{"kept connection: membrane / direct", armMembraneRR, armDirectRR, "", "", false},
		{"kept connection: nftables / floor", armNFTablesRR, armDirectBareRR, rrBlockNFTables, "", false},
		{"membrane / direct", armMembrane, armDirect, "", ">= 0.9x", true},
		{"iptables / its direct", armIPTables, armDirectIPTables, "", "", false},
		{"nftables / its direct", armNFTables, armDirectNFTables, "", "", false},
		{"direct: membrane cluster / iptables rules", armDirect, armDirectIPTables, "iptables", "", false},
		{"direct: membrane cluster / nftables rules", armDirect, armDirectNFTables, "nftables", "", false},
	}
}

// met says whether a ratio meets a ">= Nx" target.
func met(x, y float64, target string) string {
	var want float64
	if _, err := fmt.Sscanf(target, ">= %fx", &want); err != nil || x == 0 || y == 0 {
		return ""
	}
	if x/y >= want {
		return " met"
	}
	return " MISSED"
}

func (r *report) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n== Socket load balancing vs kube-proxy: connection rate to the Service VIP created last ==\n")
	fmt.Fprintf(&sb, "Two 2-node local clusters side by side, same workload, same service sets: one with membrane-agent on every node,\n")
	fmt.Fprintf(&sb, "one without it and with kube-proxy v1.34.2 in every node namespace (iptables, then nftables mode, default sync\n")
	fmt.Fprintf(&sb, "periods). Each service: selector-less, one TCP port, an EndpointSlice with the cluster's 2 http-echo pods (one\n")
	fmt.Fprintf(&sb, "per node); the VIP arms pick one per connection, the direct arms alternate between their pod IPs.\n")
	fmt.Fprintf(&sb, "Client: %d connection at a time from inside a client pod's network namespace and cgroup (node 1): connect,\n", r.load.concurrency)
	fmt.Fprintf(&sb, "one HTTP GET, read the whole response, close with SO_LINGER 0 (a RST: no TIME_WAIT on either side, every arm).\n")
	fmt.Fprintf(&sb, "Arms take turns in runs of %s (after %s warm-up): per size a block of %d rounds of membrane, direct, iptables,\n", r.load.duration, r.load.warmup, r.rounds)
	fmt.Fprintf(&sb, "iptables with the VIP whose rule is last, direct; then a block with nftables; each round starting one arm\n")
	fmt.Fprintf(&sb, "further. Membrane/kube-proxy ratios pair the runs of the same block; the other ratios use every run.\n")
	fmt.Fprintf(&sb, "kube-proxy writes KUBE-SERVICES in Go map order: the VIP created last lands anywhere (note: its rule's place),\n")
	fmt.Fprintf(&sb, "so the \"VIP rule last\" arm targets whichever service's rule ended up last, the longest walk for a SYN.\n")
	fmt.Fprintf(&sb, "A third cluster with neither Membrane nor kube-proxy gives the floor: direct pod-IP connects on bare veths,\n")
	fmt.Fprintf(&sb, "in the nftables blocks. After each nftables block, a block with a %d-rule ingress policy on Membrane's backends\n", serverPolicyRules)
	fmt.Fprintf(&sb, "(rule 0 allows the client), beside the same nftables and floor arms. At the first size, arms marked\n")
	fmt.Fprintf(&sb, "%q send their requests over one kept connection per target (TCP_RR-style; rate = requests/s):\n", rrSuffix)
	fmt.Fprintf(&sb, "there kube-proxy pays conntrack/NAT on every packet, Membrane's socket LB nothing after the connect.\n")
	fmt.Fprintf(&sb, "kube-proxy flags on node 1: %s\n\n", r.kubeProxyFlags)

	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "services\tarm\tconns/s\truns\tmin-max\tp50 µs\tp99 µs\terrors\t note\t")
	for _, size := range r.sizes {
		for _, arm := range armOrder {
			runs := r.runs(arm, size, "")
			if len(runs) == 0 {
				continue
			}
			var notes []string
			p50, p99, errs := 0, 0, 0
			lo, hi := runs[0].res.Rate, runs[0].res.Rate
			for _, x := range runs {
				lo, hi = min(lo, x.res.Rate), max(hi, x.res.Rate)
				p50 += x.res.P50Micros
				p99 = max(p99, x.res.P99Micros)
				errs += x.res.Errors
				if x.note != "" && !slices.Contains(notes, x.note) {
					notes = append(notes, x.note)
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%d\t%.0f-%.0f\t%d\t%d\t%d\t %s\t\n", size, arm, r.mean(arm, size, ""), len(runs), lo, hi, p50/len(runs), p99, errs, strings.Join(notes, ", "))
		}
	}
	tw.Flush()

	fmt.Fprintf(&sb, "\nRatios of mean conns/s:\n")
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "\t"
	for _, size := range r.sizes {
		head += fmt.Sprintf("%d services\t", size)
	}
	fmt.Fprintln(tw, head+" target\t")
	last := r.sizes[len(r.sizes)-1]
	for _, row := range ratioRows() {
		line := row.name + "\t"
		for _, size := range r.sizes {
			x, y := r.mean(row.a, size, row.block), r.mean(row.b, size, row.block)
			line += ratio(x, y)
			if row.judged(size, last) {
				line += met(x, y, row.target)
			}
			line += "\t"
		}
		target := row.target
		if row.largest && target != "" {
			target += fmt.Sprintf(" at %d", last)
		}
		fmt.Fprintln(tw, line+" "+target+"\t")
	}
	tw.Flush()

	if len(r.datapath) > 0 {
		fmt.Fprintf(&sb, "\nMembrane's datapath per arm (both nodes; kernel BPF run time statistics): program mean ns per run x runs per\n")
		fmt.Fprintf(&sb, "connection; per connection: total ns in those programs, flow events written, conntrack entries created, and\n")
		fmt.Fprintf(&sb, "the agents' CPU time (their cgroups: turning the flow events into flows, plus their idle work).\n")
		for _, size := range r.sizes {
			for _, arm := range armOrder {
				if d, ok := r.datapath[dpKey{arm, size}]; ok {
					fmt.Fprintf(&sb, "  %d services, %s: %s\n", size, arm, d)
				}
			}
		}
	}

	fmt.Fprintf(&sb, "\nTime to program one more service: from the Service create call returning to the frontend with both backends\n")
	fmt.Fprintf(&sb, "in the node's datapath: for Membrane a lookup in the pinned BPF service map every 100 µs; for kube-proxy the\n")
	fmt.Fprintf(&sb, "kernel's nf_tables announcement of the VIP's nat KUBE-SERVICES rule or service-ips element (what `nft monitor`\n")
	fmt.Fprintf(&sb, "sees). The EndpointSlice goes first; the Service follows %s later for Membrane, and for kube-proxy once it is\n", settle)
	fmt.Fprintf(&sb, "idle on every node (slice synced, no sync running, the last one ended over its 1s min-sync-period ago), so the\n")
	fmt.Fprintf(&sb, "time is its reaction to the Service alone. \"target\" = the service then measured, \"extra\" = more at the end.\n")
	fmt.Fprintf(&sb, "kube-proxy syncs: on the client node from the Service create call until its rule was listed, with their mean\n")
	fmt.Fprintf(&sb, "duration (kube-proxy's sync_proxy_rules_duration_seconds).\n")
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "arm\tkind\tservices before\tclient node\tall nodes\tkube-proxy syncs (mean duration)\t")
	for _, arm := range armOrder {
		for _, s := range r.programs[arm] {
			syncs := ""
			if s.syncs > 0 {
				syncs = fmt.Sprintf("%d (%s)", s.syncs, ms(s.syncMean))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t\n", arm, s.kind, s.existing, ms(s.client), ms(s.all), syncs)
		}
	}
	tw.Flush()
	mm, ok := r.extraMedian(armMembrane)
	if ok {
		fmt.Fprintf(&sb, "\nOne extra service at ~%d services, median (max) of the client node's samples:\n", last)
		for _, arm := range []string{armMembrane, armIPTables, armNFTables} {
			if med, ok := r.extraMedian(arm); ok {
				fmt.Fprintf(&sb, "  %-20s %s (max %s)", arm, ms(med), ms(r.extraMax(arm)))
				if arm != armMembrane && mm > 0 {
					fmt.Fprintf(&sb, "  = %.0fx membrane's", float64(med)/float64(mm))
				}
				fmt.Fprintln(&sb)
			}
		}
		fmt.Fprintf(&sb, "  target: membrane <= 5 ms\n")
	}

	if len(r.notes) > 0 {
		fmt.Fprintf(&sb, "\nNotes:\n")
		for _, n := range r.notes {
			fmt.Fprintf(&sb, "- %s\n", n)
		}
	}
	fmt.Fprintf(&sb, "\nWhole benchmark: %s\n", r.took.Round(time.Second))
	return sb.String()
}

func (r *report) extras(arm string) []time.Duration {
	var ds []time.Duration
	for _, s := range r.programs[arm] {
		if s.kind == "extra" {
			ds = append(ds, s.client)
		}
	}
	slices.Sort(ds)
	return ds
}

func (r *report) extraMedian(arm string) (time.Duration, bool) {
	ds := r.extras(arm)
	if len(ds) == 0 {
		return 0, false
	}
	return ds[len(ds)/2], true
}

func (r *report) extraMax(arm string) time.Duration {
	ds := r.extras(arm)
	if len(ds) == 0 {
		return 0
	}
	return ds[len(ds)-1]
}

// metrics reports the largest size's numbers on the benchmark's line.
func (r *report) metrics(b *testing.B) {
	last := r.sizes[len(r.sizes)-1]
	b.ReportMetric(0, "ns/op") // the run's wall time says nothing
	for _, m := range []struct {
		arm, unit string
	}{
		{armMembrane, "membrane-conns/s"},
		{armIPTables, "iptables-conns/s"},
		{armIPTablesLast, "iptables-last-conns/s"},
		{armNFTables, "nftables-conns/s"},
		{armDirect, "direct-conns/s"},
	} {
		if v := r.mean(m.arm, last, ""); v > 0 {
			b.ReportMetric(v, m.unit)
		}
	}
	for _, m := range []struct{ a, b, block, unit string }{
		{armMembrane, armIPTables, "iptables", "membrane/iptables"},
		{armMembrane, armIPTablesLast, "iptables", "membrane/iptables-last"},
		{armMembrane, armNFTables, "nftables", "membrane/nftables"},
		{armMembrane, armDirect, "", "membrane/direct"},
		{armMembrane, armDirectBare, "nftables", "membrane/floor"},
		{armDirect, armDirectBare, "nftables", "direct/floor"},
		{armMembranePolicy, armNFTables, blockPolicy, "membrane+policy/nftables"},
		{armMembranePolicy, armDirectBare, blockPolicy, "membrane+policy/floor"},
	} {
		if x, y := r.mean(m.a, last, m.block), r.mean(m.b, last, m.block); x > 0 && y > 0 {
			b.ReportMetric(x/y, m.unit)
		}
	}
	for _, m := range []struct{ arm, unit string }{
		{armMembrane, "membrane-bpf-ns/conn"},
		{armMembranePolicy, "membrane+policy-bpf-ns/conn"},
	} {
		if d, ok := r.datapath[dpKey{m.arm, last}]; ok && d.conns > 0 {
			b.ReportMetric(d.nsPerConn(), m.unit)
		}
	}
	for _, m := range []struct{ arm, unit string }{
		{armMembrane, "membrane-program-ms"},
		{armIPTables, "iptables-program-ms"},
		{armNFTables, "nftables-program-ms"},
	} {
		if med, ok := r.extraMedian(m.arm); ok {
			b.ReportMetric(float64(med.Microseconds())/1000, m.unit)
		}
	}
}

// Package bench holds Membrane's benchmarks on local clusters: each one
// measures Membrane and its peers in the same run, on the same machine and
// workload, and prints the ratios (`make bench`). They are Go benchmarks
// meant for -benchtime 1x; they assert no timing.
//
// BenchmarkSocketLBvsKubeProxy (socklb_bench_test.go) compares the
// connection rate through a Service VIP with Membrane's eBPF socket load
// balancer, kube-proxy v1.34 in iptables and in nftables mode, and a direct
// connection to the backend pods, at 1, 1,000 and 10,000 services, and the
// time to program one more service. It runs two local clusters side by side
// (one with membrane-agent, one with kube-proxy instead) and lets their arms
// take turns, so that other load on the machine falls on all arms alike.
// Environment knobs, e.g. for shorter runs:
//
//	MEMBRANE_BENCH_SIZES=1,1000,10000   service counts, growing
//	MEMBRANE_BENCH_DURATION=1.5s        measured time of each run of the load generator
//	MEMBRANE_BENCH_ROUNDS=5             turns per arm and block
//
// The load generator is package crr, built by the benchmark and run inside
// a client pod's network namespace and cgroup.
//
// BenchmarkPolicyChangeToEnforced (policy_bench_test.go) measures how long
// a policy change takes, from the API write to the entry in the policy map
// of every affected endpoint on both nodes, with 100 endpoints under one
// 250-rule MembraneNetworkPolicy; it reports p50 and p99 against the 100 ms
// target (MEMBRANE_BENCH_POLICY_CHANGES sets the number of changes).
//
// BenchmarkWireGuardVsUnderlay (wireguard_bench_test.go) compares pod-to-pod
// throughput across nodes with and without WireGuard.
package bench

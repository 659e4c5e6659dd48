// Package bench holds Membrane's benchmarks on local clusters: each one
// measures Membrane and its peers in the same run, on the same machine and
// workload, and prints the ratios (`make bench`). They are Go benchmarks
// meant for -benchtime 1x; they assert no timing. Each one also records its
// headline figures (the figure, its peer, the ratio, the target and the
// verdict; summary_test.go) in the file MEMBRANE_BENCH_SUMMARY names, which
// `make bench` prints as one table at the end (package summary).
//
// BenchmarkSocketLBvsKubeProxy (socklb_bench_test.go) compares the
// connection rate through a Service VIP with Membrane's eBPF socket load
// balancer, kube-proxy v1.34 in iptables and in nftables mode, and a direct
// connection to the backend pods, at 1, 1,000 and 10,000 services, and the
// time to program one more service. It runs two local clusters side by side
// (one with membrane-agent, one with kube-proxy instead) and lets their arms
// take turns, so that other load on the machine falls on all arms alike.
// The full run takes about 30 minutes on a loaded 2-core machine, two
// thirds of it creating the 10,000 services on two API servers;
// MEMBRANE_BENCH_SIZES=1,1000 takes about 8. Environment knobs, e.g. for
// shorter runs:
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
// of every affected endpoint on both nodes (and, separately, the agents' own
// view from their histogram), with 100 endpoints of 100 distinct identities
// (and of 10) under one 250-rule MembraneNetworkPolicy, changes that move,
// add and remove allow and deny rules and an L7 rule, and new pods from
// Ready to enforced; p50 and p99 against the targets
// (MEMBRANE_BENCH_POLICY_CHANGES sets the number of changes).
//
// BenchmarkWireGuardVsUnderlay (wireguard_bench_test.go) compares pod-to-pod
// throughput across nodes with and without WireGuard, and the CPU per GB of
// each against the floor (the cipher's own cost, measured in the same run,
// plus the plain path's).
//
// BenchmarkL7AddedLatency (l7_bench_test.go) measures the request latency
// and CPU an L7 HTTP policy adds, with Membrane's node Envoy and with a
// sidecar pair as a sidecar mesh runs it, on one 2-node cluster with the
// same workload, the same Envoy binary and the same RBAC rules. Client pods
// on node 1 send keep-alive GETs at a fixed rate to echo pods on node 2 over
// three arms taking turns: direct (an L3/L4 policy, no proxy), membrane (an
// L7 policy: the datapath redirects to node 2's Envoy) and the sidecar pair
// (the client pod's nat OUTPUT rules redirect to its sidecar, which
// recovers the original destination; the server pod's nat PREROUTING rules
// redirect to its sidecar, which has the listener xds/translate generates
// for it, checked equal to the node Envoy's live one). It reports p50 and
// p99 per arm, the latency each proxy arm adds over direct and the CPU per
// request (membrane: node 2's Envoy and agent pods; the sidecar pair: both
// sidecars; each plus its machine softirq in excess of the direct arm's),
// against the targets: Membrane's added p50, added p99 and CPU at most 0.5×
// the sidecar pair's. It prints each Envoy's stats and, with a profile
// directory, perf profiles of node 2's agent and Envoy.
//
//	MEMBRANE_BENCH_L7_REQUESTS=2000   measured requests per arm
//	MEMBRANE_BENCH_L7_PROFILE_DIR=    where to save the Envoys' stats and perf profiles
//
// BenchmarkGatewayRoutes (gateway_bench_test.go) runs one cluster with the
// chart's gatewayAPI.enabled=true and one Gateway: the time from 0 to 1,000
// HTTPRoutes all serving; then one more HTTPRoute at a time, from its create
// call to its first 200 through the Gateway's address from the host's root
// namespace (p50/p99 against the 1 s target), to its Accepted status, and
// to the first 200 on a keep-alive connection opened before the change;
// requests/s through the Gateway vs straight to the backend pod (same client,
// same concurrency, arms taking turns); and the CPU seconds and RSS of the
// operator, the agents and the node Envoys.
//
//	MEMBRANE_BENCH_GW_ROUTES=1000    HTTPRoutes before the changes
//	MEMBRANE_BENCH_GW_CHANGES=50     measured changes
//
// BenchmarkMutualAuthAddedLatency (mtls_bench_test.go) measures the latency
// and the proxies' CPU that mutual authentication adds, through the node
// Envoys' tunnel, against a pair of Envoy sidecars doing mutual TLS with the
// same binary and ciphers behind an Istio-style iptables redirect (and the
// same pair without the redirect, and a pair speaking the tunnel's
// protocol), with keep-alive connections and with a new connection per
// request.
//
// BenchmarkFQDNProxy (fqdn_bench_test.go) measures the latency and CPU the
// transparent DNS proxy adds to DNS answers, and that a connection right
// after an answer is never dropped.
package bench

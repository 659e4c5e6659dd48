// Package policy is the identity-based L3/L4 policy datapath: the tc programs
// of bpf/tc_policy.c on the host side of every pod's veth, their loader
// (pinned maps and pinned tcx links that survive agent restarts), the typed
// map API the node agent programs identities, endpoints and policy with, and
// a reader of the flow events the programs emit.
//
// Typical use by the agent:
//
//	dp, err := policy.Load(ctx, log, policy.Options{PinDir: pinDir})
//	...
//	dp.UpsertIPCache(netip.MustParsePrefix("10.244.1.7/32"), 4711)
//	dp.UpsertEndpoint(hostIfindex, policy.Endpoint{ID: 12, Identity: 4711, EnforceIngress: true})
//	dp.SetEndpointPolicy(12, []policy.Rule{{
//		Key:   policy.PolicyKey{Direction: policy.Ingress, RemoteIdentity: 4712, Proto: policy.TCP, Port: 8080},
//		Entry: policy.PolicyEntry{Verdict: policy.Allow},
//	}})
//	dp.Attach(hostIfindex)
//	events, err := dp.Events()
//	...
//	dp.Close() // enforcement keeps running; Unload(pinDir) removes it
//
// See bpf/README.md for the maps, the precedence rules and the events.
package policy

package policy

// The object and its Go bindings are committed; regenerate with `make generate`.
// -I../include supplies architecture-neutral <asm/*.h> (see bpf/include/asm/types.h).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../include" -target bpfel -type drop_reason -type flow_event -type flow_verdict -type ct_status -type policy_match -type pol_counter -type trace_mode -type traffic_direction -type policy_verdict -type reserved_identity policy ../tc_policy.c

package socklb

// The object and its Go bindings are committed; regenerate with `make generate`.
// -I../include supplies architecture-neutral <asm/*.h> (see bpf/include/asm/types.h).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../include" -target bpfel -type lb_counter socklb ../sock_lb.c

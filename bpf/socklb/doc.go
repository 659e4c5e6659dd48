// Package socklb is the socket load balancer (kube-proxy replacement): the
// cgroup connect4/sendmsg4/recvmsg4/getpeername4 programs of bpf/sock_lb.c,
// their loader (pinned maps and links that survive agent restarts), and the
// typed, incremental map API the node agent programs services with.
//
// Typical use by the agent:
//
//	dp, err := socklb.Load(ctx, log, socklb.Options{PinDir: pinDir, CgroupPath: cgroupRoot})
//	...
//	dp.UpsertBackend(1, socklb.Backend{Addr: podIP, Port: 8080, Proto: socklb.TCP})
//	dp.UpsertService(frontend, socklb.ServiceInfo{RevNATID: 7}, []socklb.BackendID{1})
//	...
//	dp.Close() // the datapath keeps running; Unload(pinDir) removes it
package socklb

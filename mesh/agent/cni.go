package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/membrane-mesh/membrane/mesh/agentapi"
)

// cniTimeout bounds how long the agent takes to put a new interface into
// the datapath for the CNI plugin.
const cniTimeout = 10 * time.Second

// initRequest asks the regeneration loop to program a new interface with
// the init identity.
type initRequest struct {
	ifindex int
	addr    netip.Addr
	// hostMAC, podMAC: the link's Ethernet addresses (nil: unknown).
	hostMAC, podMAC net.HardwareAddr
	done            chan initResult
}

type initResult struct {
	ep  agentapi.CNIEndpointResult
	err error
}

// initEndpoint programs a new pod interface with the reserved init
// identity (every new flow but the node's is dropped) and asks for a
// regeneration, which writes its real identity and policy once the pod's
// address and identity are known.
func (e *endpoints) initEndpoint(ctx context.Context, ifindex int, addr netip.Addr, hostMAC, podMAC net.HardwareAddr) (agentapi.CNIEndpointResult, error) {
	r := initRequest{ifindex: ifindex, addr: addr, hostMAC: hostMAC, podMAC: podMAC, done: make(chan initResult, 1)}
	select {
	case e.inits <- r:
	case <-ctx.Done():
		return agentapi.CNIEndpointResult{}, fmt.Errorf("wait for the policy loop: %w", ctx.Err())
	}
	select {
	case res := <-r.done:
		return res.ep, res.err
	case <-ctx.Done():
		return agentapi.CNIEndpointResult{}, fmt.Errorf("wait for the policy loop: %w", ctx.Err())
	}
}

// serveInit runs in the regeneration loop.
func (e *endpoints) serveInit(r initRequest) {
	// A new interface: the next regeneration looks them up again.
	e.discovery.Invalidate()
	if r.hostMAC != nil && r.podMAC != nil {
		e.writer.SetLink(r.ifindex, r.hostMAC, r.podMAC)
	}
	id, err := e.writer.ProgramInit(r.ifindex, r.addr)
	res := initResult{err: err}
	if err == nil {
		p, _ := e.writer.Programmed(r.ifindex)
		res.ep = agentapi.CNIEndpointResult{ID: uint16(id), Identity: uint32(p.Endpoint.Identity)}
		e.log.Info("new interface programmed with the init identity", "ifindex", r.ifindex, "ip", r.addr, "endpoint", id)
	}
	r.done <- res
	e.requestRegeneration()
}

// cniEndpointAdded serves PathCNIEndpoints: the CNI plugin's ADD waits for
// it, so the pod's first packet meets the init identity's drop.
func (a *Agent) cniEndpointAdded(w http.ResponseWriter, r *http.Request) {
	var req agentapi.CNIEndpoint
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "decode endpoint: "+err.Error(), http.StatusBadRequest)
		return
	}
	switch {
	case req.Ifindex <= 0:
		http.Error(w, fmt.Sprintf("ifindex %d: must be positive", req.Ifindex), http.StatusBadRequest)
		return
	case !req.IP.Is4():
		http.Error(w, fmt.Sprintf("ip %q: must be an IPv4 address", req.IP), http.StatusBadRequest)
		return
	}
	var macs [2]net.HardwareAddr
	if req.HostMAC != "" || req.PodMAC != "" {
		for i, s := range []string{req.HostMAC, req.PodMAC} {
			m, err := net.ParseMAC(s)
			if err != nil || len(m) != 6 {
				http.Error(w, fmt.Sprintf("MAC %q: want an Ethernet address", s), http.StatusBadRequest)
				return
			}
			macs[i] = m
		}
	}
	if a.cni != nil {
		if err := a.cni.checkAddr(req.IP); err != nil {
			a.log.Warn("refused a new interface", "pod", req.Namespace+"/"+req.Pod, "ip", req.IP, "error", err)
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), cniTimeout)
	defer cancel()
	res, err := a.eps.initEndpoint(ctx, req.Ifindex, req.IP, macs[0], macs[1])
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusServiceUnavailable
		}
		a.log.Error("program new interface", "pod", req.Namespace+"/"+req.Pod, "ifindex", req.Ifindex, "error", err)
		http.Error(w, fmt.Sprintf("program interface %d of %s/%s: %v", req.Ifindex, req.Namespace, req.Pod, err), status)
		return
	}
	writeJSON(w, res)
}

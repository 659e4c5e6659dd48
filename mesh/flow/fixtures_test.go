package flow

import (
	"net/netip"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
)

// Shared test fixtures: two pods and an outside address.
var (
	t0          = time.Date(2025, 11, 21, 16, 40, 1, 123456789, time.UTC)
	frontendIP  = netip.MustParseAddr("10.244.1.7")
	backendIP   = netip.MustParseAddr("10.244.2.9")
	externalIP  = netip.MustParseAddr("203.0.113.5")
	testEnrich  = MapEnricher{frontendIP: frontend, backendIP: backend}
	frontend    = Endpoint{Identity: 1234, Namespace: "default", PodName: "frontend-7c9d", Labels: []string{"k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=default"}}
	backend     = Endpoint{Identity: 5678, Namespace: "default", PodName: "backend-5f7c", Labels: []string{"k8s:app=backend", "k8s:io.kubernetes.pod.namespace=default", "k8s:tier=db"}}
	frontendSrc = netip.AddrPortFrom(frontendIP, 43210)
	backendDst  = netip.AddrPortFrom(backendIP, 8080)
)

// cmpAddr compares netip.Addr values with ==.
var cmpAddr = cmpopts.EquateComparable(netip.Addr{})

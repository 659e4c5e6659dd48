package agent

import (
	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/mesh/lb"
)

// ServiceList is the answer of PathServices.
type ServiceList struct {
	Node     string         `json:"node"`
	Services []ServiceEntry `json:"services"`
}

// ServiceEntry is one programmed frontend; ID is its reverse-NAT ID, the
// number `membrane service list` shows.
type ServiceEntry struct {
	ID       uint16 `json:"id"`
	lb.Entry `json:",inline"`
}

// BPFLBList is the answer of PathBPFLB: the raw maps.
type BPFLBList struct {
	Node string      `json:"node"`
	Dump socklb.Dump `json:"dump"`
}

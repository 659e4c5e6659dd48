package agent

import (
	"github.com/membrane-mesh/membrane/bpf/socklb"
	"github.com/membrane-mesh/membrane/mesh/lb"
)

// ServiceList is the answer of PathServices.
type ServiceList struct {
	Node    string     `json:"node"`
	Entries []lb.Entry `json:"entries"`
}

// BPFLBList is the answer of PathBPFLB: the raw maps.
type BPFLBList struct {
	Node string      `json:"node"`
	Dump socklb.Dump `json:"dump"`
}

package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// State is the record of a cluster, written as soon as anything of it exists
// so that `down` can remove a half-built cluster too.
type State struct {
	Name        string `json:"name"`
	Index       int    `json:"index"`
	PodCIDR     string `json:"podCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	CgroupRoot  string `json:"cgroupRoot"`
	Encryption  string `json:"encryption,omitempty"`
	// IdentityProvider: Options.IdentityProvider.
	IdentityProvider string `json:"identityProvider,omitempty"`
	// NoMembrane is Options.NoMembrane: no chart was installed.
	NoMembrane bool `json:"noMembrane,omitempty"`
	// ClusterID is Options.ClusterID (the chart's cluster.id).
	ClusterID int `json:"clusterID,omitempty"`
	// HelmSet are the chart values `up` was given (Options.HelmSet).
	HelmSet []string `json:"helmSet,omitempty"`
	// UnderlayMTU is Options.UnderlayMTU.
	UnderlayMTU int         `json:"underlayMTU,omitempty"`
	Nodes       []NodeState `json:"nodes"`
	Processes   []Process   `json:"processes"`
}

// NodeState records one node.
type NodeState struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	IP    string `json:"ip"`
	Netns string `json:"netns"`
	Link  string `json:"link"`
}

// Layout returns the cluster's layout.
func (s *State) Layout() Layout { return Layout{Name: s.Name, Index: s.Index} }

func (s *State) save() error {
	l := s.Layout()
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode cluster state: %w", err)
	}
	tmp := l.StateFile() + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	if err := os.Rename(tmp, l.StateFile()); err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	return nil
}

// ErrNoCluster means no cluster of that name exists.
var ErrNoCluster = errors.New("no such cluster")

// Load reads the record of the named cluster.
func Load(name string) (*State, error) {
	raw, err := os.ReadFile(Layout{Name: name}.StateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cluster %q: %w", name, ErrNoCluster)
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster %q: %w", name, err)
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("parse cluster %q state: %w", name, err)
	}
	return &s, nil
}

// List returns the names of all clusters with a record.
func List() ([]string, error) {
	entries, err := os.ReadDir(DefaultStateRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(DefaultStateRoot, e.Name(), "cluster.json")); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// allocateIndex picks the lowest underlay index no other cluster uses.
func allocateIndex() (int, error) {
	names, err := List()
	if err != nil {
		return 0, err
	}
	used := map[int]bool{}
	for _, n := range names {
		s, err := Load(n)
		if err != nil {
			return 0, err
		}
		used[s.Index] = true
	}
	for i := 1; i <= 250; i++ {
		if !used[i] {
			return i, nil
		}
	}
	return 0, errors.New("allocate underlay subnet: all 250 are in use")
}

package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"

	"github.com/membrane-mesh/membrane/mesh/statefile"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// proxyGroupsFileName keeps, below the state directory, the groups of
// pods sharing a filter chain in the L7 configuration published last, with
// their labels: a restarted agent continues their chains' names
// (translate.InheritLabels), so the node's Envoy, which kept running,
// drains none of their connections.
const proxyGroupsFileName = "proxy-groups.json"

// proxyGroupsVersion is the version of the file saveProxyGroups writes.
const proxyGroupsVersion = 1

// proxyGroups is the file's content.
type proxyGroups struct {
	Version int               `json:"version"`
	Groups  []translate.Group `json:"groups"`
}

// proxyGroupsFile is where the agent keeps its proxy's groups; "" (no
// state directory): nowhere.
func (c Config) proxyGroupsFile() string {
	if c.StateDir == "" {
		return ""
	}
	return filepath.Join(c.StateDir, proxyGroupsFileName)
}

// loadProxyGroups reads the groups saveProxyGroups wrote to path. A
// missing file gives none; one that cannot be read, parsed or validated is
// an error naming it.
func loadProxyGroups(path string) ([]translate.Group, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load the proxy's groups: %w", err)
	}
	var f proxyGroups
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("load the proxy's groups %s: %w", path, err)
	}
	if f.Version != proxyGroupsVersion {
		return nil, fmt.Errorf("load the proxy's groups %s: version %d, want %d", path, f.Version, proxyGroupsVersion)
	}
	if err := translate.ValidateGroups(f.Groups); err != nil {
		return nil, fmt.Errorf("load the proxy's groups %s: %w", path, err)
	}
	return f.Groups, nil
}

// saveProxyGroups writes groups to path atomically.
func saveProxyGroups(path string, groups []translate.Group) error {
	data, err := json.Marshal(proxyGroups{Version: proxyGroupsVersion, Groups: groups})
	if err != nil {
		return fmt.Errorf("save the proxy's groups: %w", err)
	}
	if err := statefile.Write(path, append(data, '\n')); err != nil {
		return fmt.Errorf("save the proxy's groups: %w", err)
	}
	return nil
}

// groupSaver keeps the groups of the configuration the proxy published
// last in a file, off the regeneration loop: update hands it each
// published configuration, and the proxy's run loop writes its groups
// when they changed (saveGroups).
type groupSaver struct {
	path string
	// next is the configuration published last and not saved yet (nil:
	// none); under the proxy's mu.
	next *translate.Node
	// wake tells run that next is set.
	wake chan struct{}
	// saved are the groups in the file (the run loop's).
	saved []translate.Group
}

// saveGroups writes the groups of the configuration published last if
// they changed. A failed write is logged: it costs the connections of the
// chains a restarted agent renames.
func (p *proxy) saveGroups() {
	p.mu.Lock()
	n := p.groups.next
	p.groups.next = nil
	p.mu.Unlock()
	if n == nil || p.groups.path == "" {
		return
	}
	gs := translate.Groups(*n)
	if len(gs) == 0 && len(p.groups.saved) == 0 || reflect.DeepEqual(gs, p.groups.saved) {
		return
	}
	if err := saveProxyGroups(p.groups.path, gs); err != nil {
		p.log.Warn("a restarted agent would rename the L7 chains shared by groups of pods", "error", err)
		return
	}
	p.groups.saved = gs
}

package fqdn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
	"github.com/membrane-mesh/membrane/mesh/statefile"
)

// fileVersion is the version of the file Save writes.
const fileVersion = 1

type file struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// Save writes every entry to path atomically: a reader (or a Load after a
// crash) sees the previous file or the new one, never a mix.
func (c *Cache) Save(path string) error {
	data, err := json.Marshal(file{Version: fileVersion, Entries: c.Snapshot()})
	if err != nil {
		return fmt.Errorf("save name cache %s: %w", path, err)
	}
	if err := statefile.Write(path, append(data, '\n')); err != nil {
		return fmt.Errorf("save name cache: %w", err)
	}
	return nil
}

// Load returns a cache configured by c holding the entries Save wrote to
// path, expired ones included (Expire decides about them, knowing which
// connections still exist). A missing file gives an empty cache; a file
// that cannot be read or parsed is an error naming it.
func Load(path string, c Config) (*Cache, error) {
	cache := New(c)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cache, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load name cache: %w", err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("load name cache %s: %w", path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("load name cache %s: version %d, want %d", path, f.Version, fileVersion)
	}
	for i, e := range f.Entries {
		switch {
		case !e.Source.IsValid():
			return nil, fmt.Errorf("load name cache %s: entries[%d].source: missing", path, i)
		case !e.IP.IsValid():
			return nil, fmt.Errorf("load name cache %s: entries[%d].ip: missing", path, i)
		case e.Expires.IsZero():
			return nil, fmt.Errorf("load name cache %s: entries[%d].expires: missing", path, i)
		}
		if err := matchpattern.ValidateName(e.Name); err != nil {
			return nil, fmt.Errorf("load name cache %s: entries[%d].name %q: %w", path, i, e.Name, err)
		}
		src, name := e.Source.Unmap(), matchpattern.Canonical(e.Name)
		byName := cache.names[src]
		if byName == nil {
			byName = map[string]map[netip.Addr]ipState{}
			cache.names[src] = byName
		}
		set := byName[name]
		if set == nil {
			set = map[netip.Addr]ipState{}
			byName[name] = set
		}
		st := set[e.IP.Unmap()]
		if e.Expires.After(st.expires) {
			st.expires = e.Expires
		}
		if e.Learned.After(st.learned) {
			st.learned = e.Learned
		}
		set[e.IP.Unmap()] = st
	}
	return cache, nil
}

// Package images resolves pod image references to the local root filesystems
// that `make tools` assembles from real sources.
//
// Layout of a store directory:
//
//	<store>/<key>/image.json   the image config (Config below)
//	<store>/<key>/rootfs/      the root filesystem, laid out as the real image is
//
// The key of a reference drops the registry host, a leading "library/", the tag
// and the digest, and replaces "/" by "_": "docker.io/hashicorp/http-echo:1.0"
// becomes "hashicorp_http-echo".
package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Config is the part of an OCI image config that running a container needs.
type Config struct {
	// Names are the references this image answers to (without registry or tag).
	Names      []string `json:"names"`
	Version    string   `json:"version"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
}

// Image is a resolved image: its config and the directory of its root filesystem.
type Image struct {
	Config
	Ref    string
	RootFS string
}

// Store is a directory of images.
type Store struct {
	Dir string
}

// ErrNotFound is returned for a reference the store has no image for.
var ErrNotFound = errors.New("image not found")

// Key returns the store key of an image reference.
func Key(ref string) string {
	name := ref
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	// A tag follows the last ':' after the last '/'.
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	parts := strings.Split(name, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		parts = parts[1:]
	}
	if len(parts) > 1 && parts[0] == "library" {
		parts = parts[1:]
	}
	return strings.Join(parts, "_")
}

// Resolve finds the image for ref.
func (s Store) Resolve(ref string) (Image, error) {
	key := Key(ref)
	if key == "" {
		return Image{}, fmt.Errorf("resolve image %q: empty name", ref)
	}
	dir := filepath.Join(s.Dir, key)
	raw, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, fmt.Errorf("resolve image %q in %s: %w (run `make tools`)", ref, s.Dir, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("resolve image %q: %w", ref, err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return Image{}, fmt.Errorf("resolve image %q: parse %s: %w", ref, filepath.Join(dir, "image.json"), err)
	}
	root := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(root); err != nil {
		return Image{}, fmt.Errorf("resolve image %q: %w", ref, err)
	}
	return Image{Config: cfg, Ref: ref, RootFS: root}, nil
}

// Stores are searched in order: the first that has an image for a
// reference wins.
type Stores []Store

// Resolve finds the image for ref in the first store that has it.
func (ss Stores) Resolve(ref string) (Image, error) {
	var dirs []string
	for _, s := range ss {
		img, err := s.Resolve(ref)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return img, err
		}
		dirs = append(dirs, s.Dir)
	}
	return Image{}, fmt.Errorf("resolve image %q in %s: %w (run `make tools build`)", ref, strings.Join(dirs, " and "), ErrNotFound)
}

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"slices"
	"testing"
)

// TestBundleArchive: files go under membrane-bundle/, what could not be
// collected is listed in errors.txt, and the archive is a valid tar.gz.
func TestBundleArchive(t *testing.T) {
	var buf bytes.Buffer
	b := newBundle(&buf)
	b.add("nodes/n1/status.json", []byte(`{"node":"n1"}`), nil)
	b.add("nodes/n2/status.json", nil, errors.New("node n2: agent did not answer"))
	b.add("cluster/nodes.json", []byte(`{}`), nil)
	if err := b.close(); err != nil {
		t.Fatal(err)
	}
	if b.files != 3 || len(b.errs) != 1 {
		t.Errorf("%d files, errors %v; want 3 files (errors.txt included) and 1 error", b.files, b.errs)
	}
	gz, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = string(data)
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"membrane-bundle/cluster/nodes.json", "membrane-bundle/errors.txt", "membrane-bundle/nodes/n1/status.json"}
	if !slices.Equal(names, want) {
		t.Errorf("files %v, want %v", names, want)
	}
	if e := got["membrane-bundle/errors.txt"]; e != "nodes/n2/status.json: node n2: agent did not answer\n" {
		t.Errorf("errors.txt: %q", e)
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
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

// TestFetchInOrder: items are added in their order whatever order they
// finish in, an error stays with its item, no more than bundleParallel
// are collected at once, and each has a deadline.
func TestFetchInOrder(t *testing.T) {
	const n = 3*bundleParallel + 1
	var (
		mu            sync.Mutex
		running, peak int
		items         []bundleItem
		added         []string
	)
	for i := range n {
		items = append(items, bundleItem{fmt.Sprint(i), func(ctx context.Context) ([]byte, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("no deadline")
			}
			mu.Lock()
			running++
			peak = max(peak, running)
			mu.Unlock()
			// Later items finish first.
			time.Sleep(time.Duration(n-i) * time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			if i == 5 {
				return nil, errors.New("broken")
			}
			return []byte{byte(i)}, nil
		}})
	}
	fetchInOrder(t.Context(), items, func(name string, data []byte, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case name == "5" && err == nil:
			t.Error("item 5's error was lost")
		case name != "5" && (err != nil || len(data) != 1 || fmt.Sprint(data[0]) != name):
			t.Errorf("item %s: %v, %v", name, data, err)
		}
		added = append(added, name)
	})
	for i, name := range added {
		if name != fmt.Sprint(i) {
			t.Fatalf("added in the order %v", added)
		}
	}
	if len(added) != n {
		t.Errorf("%d of %d items added", len(added), n)
	}
	if peak > bundleParallel || peak < 2 {
		t.Errorf("%d items collected at once: want 2 to %d", peak, bundleParallel)
	}
}

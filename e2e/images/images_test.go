package images

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKey(t *testing.T) {
	for ref, want := range map[string]string{
		"busybox":                                 "busybox",
		"busybox:1.36":                            "busybox",
		"docker.io/library/busybox:latest":        "busybox",
		"hashicorp/http-echo:1.0.0":               "hashicorp_http-echo",
		"registry.k8s.io/coredns/coredns:v1.12.0": "coredns_coredns",
		"localhost:5000/app@sha256:abc":           "app",
		"gcr.io/k8s-staging-gateway-api/echo-basic:v20240412-v1.0.0-394-g40c666fd": "k8s-staging-gateway-api_echo-basic",
	} {
		if got := Key(ref); got != want {
			t.Errorf("Key(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "busybox")
	if err := os.MkdirAll(filepath.Join(img, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(img, "image.json"), []byte(`{"names":["busybox"],"cmd":["sh"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := Store{Dir: dir}
	got, err := s.Resolve("docker.io/busybox:1.36")
	if err != nil {
		t.Fatal(err)
	}
	if got.RootFS != filepath.Join(img, "rootfs") || len(got.Cmd) != 1 || got.Cmd[0] != "sh" {
		t.Fatalf("resolved %+v", got)
	}
	if _, err := s.Resolve("nginx"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown image: got %v", err)
	}
}

// The first store that has an image wins; a missing one falls through.
func TestStoresOrder(t *testing.T) {
	mk := func(version string) Store {
		dir := t.TempDir()
		img := filepath.Join(dir, "membrane_membrane-agent")
		if err := os.MkdirAll(filepath.Join(img, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, "image.json"), []byte(`{"names":["membrane/membrane-agent"],"version":"`+version+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return Store{Dir: dir}
	}
	own, pinned, empty := mk("own"), mk("pinned"), Store{Dir: t.TempDir()}
	for _, tc := range []struct {
		stores Stores
		want   string
	}{
		{Stores{own, pinned}, "own"},
		{Stores{pinned, own}, "pinned"},
		{Stores{empty, pinned}, "pinned"},
	} {
		got, err := tc.stores.Resolve("membrane/membrane-agent:dev")
		if err != nil || got.Version != tc.want {
			t.Errorf("resolve through %v: %q, %v; want %q", tc.stores, got.Version, err, tc.want)
		}
	}
	if _, err := (Stores{empty, own}).Resolve("busybox"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("image in no store: %v", err)
	}
}

package images

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// ownImages runs own-images.sh on binDir and returns its output.
func ownImages(t *testing.T, binDir string) string {
	t.Helper()
	out, err := exec.Command("bash", "own-images.sh", binDir).CombinedOutput()
	if err != nil {
		t.Fatalf("own-images.sh: %v\n%s", err, out)
	}
	return string(out)
}

func TestOwnImages(t *testing.T) {
	bin := t.TempDir()
	write := func(content string) {
		for _, b := range []string{"membrane", "membrane-agent", "membrane-cni", "membrane-operator"} {
			if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\necho "+b+" "+content+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("v1")
	ownImages(t, bin)
	store := Stores{{Dir: filepath.Join(bin, "images")}, {Dir: t.TempDir()}}
	img, err := store.Resolve("membrane/membrane-agent:dev")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Entrypoint, []string{"/usr/bin/membrane-agent"}) || !slices.Equal(img.Names, []string{"membrane/membrane-agent"}) {
		t.Fatalf("image config %+v", img.Config)
	}
	for _, b := range []string{"membrane", "membrane-agent", "membrane-cni", "membrane-operator"} {
		got, err := os.ReadFile(filepath.Join(img.RootFS, "usr/bin", b))
		if err != nil || string(got) != "#!/bin/sh\necho "+b+" v1\n" {
			t.Fatalf("%s in the rootfs: %q, %v", b, got, err)
		}
	}
	for _, ref := range []string{"membrane/membrane-operator:dev", "localhost/membrane/membrane-cni:v9"} {
		if _, err := store.Resolve(ref); err != nil {
			t.Errorf("resolve %s: %v", ref, err)
		}
	}

	// Unchanged binaries: the same content-addressed image.
	ownImages(t, bin)
	again, err := store.Resolve("membrane/membrane-agent:dev")
	if err != nil || again.Version != img.Version {
		t.Fatalf("rebuild of unchanged binaries: version %q (was %q), %v", again.Version, img.Version, err)
	}
	// A new build: a new image, the old one kept for running pods.
	write("v2")
	ownImages(t, bin)
	next, err := store.Resolve("membrane/membrane-agent:dev")
	if err != nil || next.Version == img.Version {
		t.Fatalf("rebuild of changed binaries: version %q (was %q), %v", next.Version, img.Version, err)
	}
	if got, _ := os.ReadFile(filepath.Join(next.RootFS, "usr/bin/membrane-agent")); string(got) != "#!/bin/sh\necho membrane-agent v2\n" {
		t.Fatalf("new image holds %q", got)
	}
	if _, err := os.Stat(img.RootFS); err != nil {
		t.Fatalf("the previous image went at once: %v", err)
	}

	if _, err := store.Resolve("membrane/nothing:dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown image: got %v", err)
	}
}

func TestOwnImagesNeedsBinaries(t *testing.T) {
	out, err := exec.Command("bash", "own-images.sh", t.TempDir()).CombinedOutput()
	if err == nil {
		t.Fatalf("own-images.sh without binaries succeeded: %s", out)
	}
}

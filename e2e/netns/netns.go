// Package netns creates and removes network namespaces that persist as bind
// mounts of a file, like `ip netns add` does.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// Create makes a new network namespace and pins it at path.
func Create(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	})
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	return nil
}

// Remove unmounts and deletes the namespace file at path. A missing file is
// not an error.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// Do runs fn on a thread that has entered the namespace at path. fn must not
// start goroutines that expect to be in the namespace.
func Do(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	return onThread(func() error {
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// onThread runs fn on a locked OS thread that may leave the process's network
// namespace, then returns the thread to it. A thread that cannot return is
// left locked, so the Go runtime discards it instead of reusing it. The
// namespace to return to is the locked thread's own, read before fn runs:
// read on the caller's thread, it could be another goroutine's, which may
// have entered a pod's namespace meanwhile, and the thread would go back to
// the Go runtime in that namespace (a later exec from it, such as a CNI ADD,
// would then run there).
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		err = fn()
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the original netns: %w", serr))
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// ForTest creates a network namespace for tb under its temporary directory
// and removes it when tb ends. Without root it ends tb through
// testenv.RequireRoot.
func ForTest(tb testing.TB) string {
	tb.Helper()
	testenv.RequireRoot(tb, "creates a network namespace")
	path := filepath.Join(tb.TempDir(), "netns")
	if err := Create(path); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := Remove(path); err != nil {
			tb.Errorf("remove netns: %v", err)
		}
	})
	return path
}

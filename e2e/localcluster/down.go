package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/bpf/hostfs"
	"github.com/membrane-mesh/membrane/e2e/cgroups"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// Down removes everything the cluster created: processes, pod and node
// namespaces, links, mounts, cgroups and state. It is safe to run twice and
// on a half-built cluster. With no cluster of that name it removes the logs
// a failed `up` left.
func Down(ctx context.Context, log *slog.Logger, name string) error {
	return down(ctx, log, name, false)
}

// down is Down; with keepLogs (a failed `up`) the log dir stays.
func down(ctx context.Context, log *slog.Logger, name string, keepLogs bool) error {
	s, err := Load(name)
	if errors.Is(err, ErrNoCluster) {
		dir := Layout{Name: name}.StateDir()
		if _, serr := os.Stat(dir); validName(name) && serr == nil {
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("remove logs of cluster %q: %w", name, err)
			}
			log.Info("removed the logs of a failed start", "cluster", name, "dir", dir)
			return nil
		}
		log.Info("no such cluster, nothing to remove", "cluster", name)
		return nil
	}
	if err != nil {
		return err
	}
	l := s.Layout()
	var errs []error
	// Node runners first, so they stop restarting pods; then the control plane
	// in reverse start order.
	for i := len(s.Processes) - 1; i >= 0; i-- {
		if err := s.Processes[i].stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// Whatever is left below the cluster's cgroup (pods, exec'd commands).
	if s.CgroupRoot != "" {
		if err := cgroups.Remove(l.CgroupDir(s.CgroupRoot)); err != nil {
			errs = append(errs, err)
		}
		// The shared parent goes when the last cluster does.
		_ = os.Remove(filepath.Join(s.CgroupRoot, "membrane"))
	}
	// Pinned eBPF maps and links: removing the pins detaches the programs.
	if err := os.RemoveAll(l.BPFDir()); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", l.BPFDir(), err))
	}
	_ = os.Remove(BPFRoot) // the shared parent goes with the last cluster
	// Pod namespaces and any other mount below the cluster's run dir.
	if err := unmountBelow(l.RunDir()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(l.RunDir()); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", l.RunDir(), err))
	}
	for _, n := range s.Nodes {
		if err := netns.Remove(n.Netns); err != nil {
			errs = append(errs, err)
		}
		if err := deleteLink(n.Link); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeWorld(l)...)
	if err := netns.Remove(l.ControlPlaneNetns()); err != nil {
		errs = append(errs, err)
	}
	if err := unlinkAll(l); err != nil { // cluster mesh: joined underlays
		errs = append(errs, err)
	}
	for _, link := range []string{l.ControlPlaneLink(), l.Bridge()} {
		if err := deleteLink(link); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the record so that another `down` can finish the job.
		return fmt.Errorf("remove cluster %q: %w", name, err)
	}
	if keepLogs {
		if err := removeAllBut(l.StateDir(), l.LogDir()); err != nil {
			return err
		}
		log.Info("cluster removed but its logs", "cluster", name, "logs", l.LogDir())
		return nil
	}
	if err := os.RemoveAll(l.StateDir()); err != nil {
		return fmt.Errorf("remove %s: %w", l.StateDir(), err)
	}
	log.Info("cluster removed", "cluster", name)
	return nil
}

// removeAllBut removes everything in dir except keep, an entry of dir.
func removeAllBut(dir, keep string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	for _, e := range entries {
		if p := filepath.Join(dir, e.Name()); p != keep {
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("remove %s: %w", p, err)
			}
		}
	}
	return nil
}

// unmountBelow detaches every mount point below dir, deepest first.
func unmountBelow(dir string) error {
	mounts, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}

// mountsBelow lists the mount points at or below dir in mount order.
func mountsBelow(dir string) ([]string, error) {
	mounts, err := hostfs.Mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	return out, nil
}

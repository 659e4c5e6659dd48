package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// uapiDir is where WireGuard implementations put their UAPI sockets.
const uapiDir = "/var/run/wireguard"

// Cleanup removes, for removing Membrane from a node, everything of
// WireGuard the agent made: the policy rule and routing table and the
// device in the calling thread's network namespace (as Remove), a stale
// UAPI socket of the embedded device, and the private key in stateDir
// (empty: none). It logs one line per object it removes and touches only
// objects by this package's names and table; running it again is a no-op.
// Run it after the agent has stopped: an embedded device still served by a
// live agent is deleted too, but its socket is left to it.
func Cleanup(log *slog.Logger, stateDir string) error {
	return cleanup(log, stateDir, uapiDir)
}

func cleanup(log *slog.Logger, stateDir, uapiDir string) error {
	errs := []error{remove(log)}
	sock := filepath.Join(uapiDir, DeviceName+".sock")
	if _, err := os.Lstat(sock); err == nil {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			log.Warn("left the UAPI socket of a running WireGuard device", "socket", sock)
		} else if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove stale UAPI socket %s: %w", sock, err))
		} else if err == nil {
			log.Info("removed stale WireGuard UAPI socket", "socket", sock)
		}
	}
	if stateDir != "" {
		errs = append(errs, removeKeyFiles(log, stateDir))
	}
	return errors.Join(errs...)
}

// removeKeyFiles removes the key file below stateDir and temporary files
// an interrupted Store left next to it.
func removeKeyFiles(log *slog.Logger, stateDir string) error {
	entries, err := os.ReadDir(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("list state dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if name != KeyFileName && !strings.HasPrefix(name, "."+KeyFileName+".") {
			continue
		}
		path := filepath.Join(stateDir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove WireGuard key file: %w", err))
			continue
		}
		log.Info("removed WireGuard key file", "path", path)
	}
	return errors.Join(errs...)
}

// Command gatewaycrds copies the Gateway API CustomResourceDefinitions of
// the version go.mod pins (standard and experimental channels, files
// unchanged) into the chart's crds-gateway directory. `make verify` runs it
// through go generate: the chart's copies equal the module's files.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const module = "sigs.k8s.io/gateway-api"

func main() {
	if err := run("crds-gateway"); err != nil {
		fmt.Fprintln(os.Stderr, "gatewaycrds:", err)
		os.Exit(1)
	}
}

func run(dst string) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		return fmt.Errorf("find module %s: %w", module, err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "config", "crd")
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	for _, channel := range []string{"standard", "experimental"} {
		files, err := filepath.Glob(filepath.Join(src, channel, "gateway.networking.*.yaml"))
		if err != nil || len(files) == 0 {
			return fmt.Errorf("no CRDs in %s: %v", filepath.Join(src, channel), err)
		}
		if err := os.MkdirAll(filepath.Join(dst, channel), 0o755); err != nil {
			return err
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if !bytes.Contains(raw, []byte("gateway.networking.k8s.io/bundle-version: ")) {
				return fmt.Errorf("%s: no bundle-version annotation", f)
			}
			if err := os.WriteFile(filepath.Join(dst, channel, filepath.Base(f)), raw, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

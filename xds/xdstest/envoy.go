package xdstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// EnvoyValidate loads b into envoy (the pinned binary) in validate mode,
// each SDS reference over ADS made a reference to the static secret of its
// name (b's static resources carry the secrets): nil if Envoy takes it,
// else an error with Envoy's output.
func EnvoyValidate(tb testing.TB, envoy string, b *bootstrapv3.Bootstrap) error {
	tb.Helper()
	raw, err := protojson.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	// protojson's spacing is deliberately unstable: compact it before the
	// textual replacement.
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		tb.Fatal(err)
	}
	js := strings.ReplaceAll(compact.String(), `,"sdsConfig":{"ads":{},"resourceApiVersion":"V3"}`, "")
	if strings.Contains(js, "sdsConfig") {
		tb.Fatalf("an SDS reference was not made static:\n%s", js)
	}
	path := filepath.Join(tb.TempDir(), "envoy.json")
	if err := os.WriteFile(path, []byte(js), 0o600); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, envoy, "--mode", "validate", "-c", path, "--disable-hot-restart", "--log-level", "warn").CombinedOutput()
	if ctx.Err() != nil {
		tb.Fatalf("envoy --mode validate: %v", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("envoy --mode validate: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

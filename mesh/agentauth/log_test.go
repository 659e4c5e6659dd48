package agentauth

import (
	"errors"
	"log/slog"
	"testing"
)

var errFake = errors.New("fake API server down")

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

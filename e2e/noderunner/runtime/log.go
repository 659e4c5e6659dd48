//go:build linux

package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// maxLogLine is the longest line written as one log record; longer lines are
// split into partial ("P") records, as containerd does.
const maxLogLine = 16 << 10

// criLog writes a container's output to a file in the CRI log format:
//
//	2016-10-06T00:17:09.669794202Z stdout F log content
type criLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	f      *os.File
	failed bool // a write failed; logged once
}

func openCRILog(logger *slog.Logger, path string) (*criLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return &criLog{logger: logger, f: f}, nil
}

// copyFrom writes what r yields as records of stream ("stdout" or "stderr")
// until r ends.
func (l *criLog) copyFrom(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			l.write(stream, "F", line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			l.write(stream, "P", line)
		default:
			if len(line) > 0 {
				l.write(stream, "F", line)
			}
			return
		}
	}
}

func (l *criLog) write(stream, tag string, content []byte) {
	rec := make([]byte, 0, len(content)+64)
	rec = time.Now().UTC().AppendFormat(rec, time.RFC3339Nano)
	rec = append(rec, ' ')
	rec = append(rec, stream...)
	rec = append(rec, ' ')
	rec = append(rec, tag...)
	rec = append(rec, ' ')
	rec = append(rec, content...)
	rec = append(rec, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(rec); err != nil && !l.failed {
		l.failed = true
		l.logger.Error("write container log", "path", l.f.Name(), "err", err)
	}
}

func (l *criLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

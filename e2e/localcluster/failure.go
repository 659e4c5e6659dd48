package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// tailLines is how much of a failed component's log an error quotes.
const tailLines = 20

// ComponentError is a failure of one of the cluster's processes: it exited,
// or it did not get ready in time. Log is the file its output went to.
type ComponentError struct {
	Component string
	Log       string
	Err       error
}

func (e *ComponentError) Error() string { return fmt.Sprintf("%v; see %s", e.Err, e.Log) }

func (e *ComponentError) Unwrap() error { return e.Err }

// blame attributes a timeout to the process that did not get ready, so that
// the error can quote its log; other errors pass unchanged.
func (s *State) blame(err error, component string) error {
	var ce *ComponentError
	if err == nil || errors.As(err, &ce) || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	for _, p := range s.Processes {
		if p.Name == component {
			return &ComponentError{Component: p.Name, Log: p.Log, Err: fmt.Errorf("%w (%s is not ready)", err, p.Name)}
		}
	}
	return err
}

// startFailure is the error of a failed `up` (err, with everything but the
// logs removed): it quotes the end of the failing component's log, so the
// user sees why at once, and says where the logs are.
func startFailure(name, logDir string, err error) error {
	var b strings.Builder
	var ce *ComponentError
	if errors.As(err, &ce) {
		tail, terr := logTail(ce.Log, tailLines)
		switch {
		case terr != nil:
			fmt.Fprintf(&b, "\n(could not read the log of %s: %v)", ce.Component, terr)
		case tail == "":
			fmt.Fprintf(&b, "\n%s wrote nothing to %s", ce.Component, ce.Log)
		default:
			fmt.Fprintf(&b, "\nlast lines of %s (%s):\n%s", ce.Component, ce.Log, tail)
		}
	}
	fmt.Fprintf(&b, "\nthe logs of every component are kept in %s (`membrane dev down --name %s` removes them)", logDir, name)
	return fmt.Errorf("bring up cluster %q: %w%s", name, err, b.String())
}

// maxTailBytes bounds how much of a log logTail reads.
const maxTailBytes = 64 << 10

// maxLineBytes cuts a quoted line that is longer.
const maxLineBytes = 512

// logTail returns the last n lines of the file at path, each indented, or
// "" for an empty file.
func logTail(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(st.Size()-maxTailBytes, 0)
	raw, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	text := strings.TrimRight(string(raw), "\n")
	if text == "" {
		return "", nil
	}
	lines := strings.Split(text, "\n")
	if off > 0 {
		lines = lines[1:] // the first one is cut
	}
	lines = lines[max(len(lines)-n, 0):]
	for i, l := range lines {
		if len(l) > maxLineBytes {
			l = l[:maxLineBytes] + " [...]"
		}
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n"), nil
}

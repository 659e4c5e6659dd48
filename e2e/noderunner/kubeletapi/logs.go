package kubeletapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// timestampFormat is the kubelet's fixed-width RFC 3339 format for
// `kubectl logs --timestamps`.
const timestampFormat = "2006-01-02T15:04:05.000000000Z07:00"

// followPoll is how often a follow request looks for new log lines.
const followPoll = 100 * time.Millisecond

// logOptions are the kubelet's PodLogOptions that apply to one container.
type logOptions struct {
	previous   bool
	follow     bool
	timestamps bool
	tail       int64 // lines; -1 = all
	limitBytes int64 // -1 = no limit
	since      time.Time
	stdout     bool
	stderr     bool
}

// errInvalid marks a query that decodes but fails validation (422).
var errInvalid = errors.New("invalid request")

// parseLogOptions decodes the query of a containerLogs request as the
// kubelet does (including the legacy "tail" parameter).
func parseLogOptions(q url.Values, now time.Time) (logOptions, error) {
	o := logOptions{tail: -1, limitBytes: -1, stdout: true, stderr: true}
	var err error
	boolParam := func(name string) bool {
		v := q.Get(name)
		if v == "" || err != nil {
			return false
		}
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			err = fmt.Errorf("query parameter %s=%q: %w", name, v, perr)
		}
		return b
	}
	intParam := func(name string, min int64) (int64, bool) {
		v := q.Get(name)
		if v == "" || err != nil {
			return 0, false
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil {
			err = fmt.Errorf("query parameter %s=%q: %w", name, v, perr)
			return 0, false
		}
		if n < min {
			err = fmt.Errorf("%w: %s must be at least %d", errInvalid, name, min)
			return 0, false
		}
		return n, true
	}
	o.previous = boolParam("previous")
	o.follow = boolParam("follow")
	o.timestamps = boolParam("timestamps")
	if tail := q.Get("tail"); tail != "" && tail != "all" && q.Get("tailLines") == "" {
		q.Set("tailLines", tail)
	}
	if n, ok := intParam("tailLines", 0); ok {
		o.tail = n
	}
	if n, ok := intParam("limitBytes", 1); ok {
		o.limitBytes = n
	}
	sinceSeconds, hasSeconds := intParam("sinceSeconds", 1)
	if hasSeconds {
		o.since = now.Add(-time.Duration(sinceSeconds) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" && err == nil {
		t, perr := time.Parse(time.RFC3339, v)
		switch {
		case perr != nil:
			err = fmt.Errorf("query parameter sinceTime=%q: %w", v, perr)
		case hasSeconds:
			err = fmt.Errorf("%w: at most one of sinceTime or sinceSeconds may be specified", errInvalid)
		default:
			o.since = t
		}
	}
	switch stream := q.Get("stream"); stream {
	case "", "All":
	case "Stdout":
		o.stderr = false
	case "Stderr":
		o.stdout = false
	default:
		if err == nil {
			err = fmt.Errorf("invalid stream type %q", stream)
		}
	}
	return o, err
}

func (h *handler) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r.URL.Query(), time.Now())
	if errors.Is(err, errInvalid) {
		writeError(w, err, http.StatusUnprocessableEntity)
		return
	}
	if err != nil {
		writeError(w, err, http.StatusBadRequest)
		return
	}
	path, done, err := h.pods.LogPath(ns, pod, container, opts.previous)
	if err != nil {
		writeError(w, err, http.StatusBadRequest)
		return
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		writeError(w, fmt.Errorf("log of container %q in pod %s/%s: %w", container, ns, pod, ErrNotFound), 0)
		return
	}
	if err != nil {
		writeError(w, fmt.Errorf("open log: %w", err), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() { _ = rc.Flush() }
	flush()
	if err := streamLog(r.Context(), f, done, opts, w, flush); err != nil && r.Context().Err() == nil {
		h.logger.Warn("stream container log", "namespace", ns, "pod", pod, "container", container, "err", err)
	}
}

// record is one parsed line of a CRI log file.
type record struct {
	time    time.Time
	stream  string // "stdout" or "stderr"
	partial bool
	content []byte // with the newline of a full ("F") record
}

// parseRecord parses `<RFC3339Nano> <stream> <tag> <content>`.
func parseRecord(line []byte) (record, error) {
	var rec record
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return rec, errors.New("no timestamp")
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return rec, fmt.Errorf("timestamp: %w", err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (string(stream) != "stdout" && string(stream) != "stderr") {
		return rec, fmt.Errorf("stream %q", stream)
	}
	tags, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return rec, errors.New("no tag")
	}
	tag, _, _ := bytes.Cut(tags, []byte{':'})
	rec = record{time: t, stream: string(stream), partial: string(tag) == "P", content: content}
	if rec.partial {
		rec.content = bytes.TrimSuffix(content, []byte{'\n'})
	}
	return rec, nil
}

func (o logOptions) wants(stream string) bool {
	return (stream == "stdout" && o.stdout) || (stream == "stderr" && o.stderr)
}

// tailOffset returns where the last n lines (partial records joined) of the
// wanted streams start in f.
func tailOffset(f io.Reader, n int64, o logOptions) (int64, error) {
	var (
		off     int64
		starts  []int64
		partial = map[string]bool{}
	)
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if rec, perr := parseRecord(line); perr == nil && o.wants(rec.stream) {
				if !partial[rec.stream] {
					starts = append(starts, off)
					if int64(len(starts)) > n {
						starts = starts[1:]
					}
				}
				partial[rec.stream] = rec.partial
			}
			off += int64(len(line))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if n == 0 || len(starts) == 0 {
		return off, nil
	}
	return starts[0], nil
}

// logWriter writes decoded records as the kubelet does.
type logWriter struct {
	w       io.Writer
	opts    logOptions
	remain  int64
	midLine map[string]bool // a stream's last record was partial
}

// errLimit ends a stream that reached limitBytes.
var errLimit = errors.New("limitBytes reached")

func (lw *logWriter) write(rec record) error {
	if !lw.opts.wants(rec.stream) || rec.time.Before(lw.opts.since) {
		return nil
	}
	line := rec.content
	if lw.opts.timestamps && !lw.midLine[rec.stream] {
		line = append([]byte(rec.time.Format(timestampFormat)+" "), line...)
	}
	lw.midLine[rec.stream] = rec.partial
	if lw.remain >= 0 && int64(len(line)) > lw.remain {
		line = line[:lw.remain]
	}
	n, err := lw.w.Write(line)
	if lw.remain >= 0 {
		lw.remain -= int64(n)
		if err == nil && lw.remain == 0 {
			return errLimit
		}
	}
	return err
}

// streamLog writes the log in f to w per opts. Following, it polls for new
// lines until ctx is done or, once done is closed (or nil), the end of the
// file.
func streamLog(ctx context.Context, f *os.File, done <-chan struct{}, opts logOptions, w io.Writer, flush func()) error {
	if opts.tail >= 0 {
		start, err := tailOffset(f, opts.tail, opts)
		if err != nil {
			return fmt.Errorf("find tail: %w", err)
		}
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			return fmt.Errorf("seek log: %w", err)
		}
	}
	lw := &logWriter{w: w, opts: opts, remain: opts.limitBytes, midLine: map[string]bool{}}
	exited := done == nil
	var ticker *time.Ticker
	br := bufio.NewReader(f)
	var pending []byte // an incomplete last line
	for {
		chunk, err := br.ReadBytes('\n')
		pending = append(pending, chunk...)
		if err == nil {
			rec, perr := parseRecord(pending)
			pending = pending[:0]
			if perr != nil {
				continue // as the kubelet: skip what does not parse
			}
			if werr := lw.write(rec); errors.Is(werr, errLimit) {
				return nil
			} else if werr != nil {
				return werr
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("read log: %w", err)
		}
		if !opts.follow || exited {
			if len(pending) > 0 {
				if rec, perr := parseRecord(pending); perr == nil {
					if werr := lw.write(rec); werr != nil && !errors.Is(werr, errLimit) {
						return werr
					}
				}
			}
			return nil
		}
		flush()
		if ticker == nil {
			ticker = time.NewTicker(followPoll)
			defer ticker.Stop()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			exited = true // read what is left, then stop
		case <-ticker.C:
		}
	}
}

package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Path is where the agent serves the observe API: GET Path?<Request.Values>
// answers newline-delimited JSON (one Flow per line), and, following, keeps
// the response open and streams new flows, each flushed at once. A line
// {"lostEvents":{"count":N}} reports N flows this reader lost because it
// lagged. Errors are JSON objects shaped like a Kubernetes Status, so that
// clients reading through the API server's node proxy see their message.
const Path = "/v1/flows"

// ContentType is the observe API's media type.
const ContentType = "application/x-ndjson"

// LostEvents tells a following reader how many flows it lost since the
// previous notice, because it read too slowly.
type LostEvents struct {
	Count uint64 `json:"count"`
}

// lostLine is a lost-events notice on the stream.
type lostLine struct {
	LostEvents LostEvents `json:"lostEvents"`
}

// line decodes one line of the stream: a flow, or a lost-events notice.
type line struct {
	Flow
	LostEvents *LostEvents `json:"lostEvents,omitempty"`
}

type handler struct {
	log   *slog.Logger
	store *Store
	now   func() time.Time
}

// NewHandler serves the observe API from store. Mount it at Path. It needs
// a server without a write timeout for following (it clears the deadline
// of its own responses where the server supports it).
func NewHandler(log *slog.Logger, store *Store) http.Handler {
	return &handler{log: log, store: store, now: time.Now}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "the observe API only answers GET")
		return
	}
	req, err := ParseRequest(r.URL.Query(), h.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	if !req.Follow {
		for _, f := range h.store.Last(req.Last, req.Filter.Match) {
			if err := enc.Encode(f); err != nil {
				return
			}
		}
		_ = rc.Flush()
		return
	}

	ctx := r.Context()
	_ = rc.SetWriteDeadline(time.Time{})
	backlog, sub := h.store.Follow(ctx, FollowOptions{Match: req.Filter.Match, Last: req.Last, Since: req.Filter.Since})
	defer sub.Close()
	sent, lost := 0, uint64(0)
	defer func() {
		h.log.Debug("observe stream ended", "remote", r.RemoteAddr, "sent", sent, "lost", sub.Dropped())
	}()
	h.log.Debug("observe stream started", "remote", r.RemoteAddr, "query", r.URL.RawQuery, "backlog", len(backlog))
	for _, f := range backlog {
		if err := enc.Encode(f); err != nil {
			return
		}
		sent++
	}
	// Send the headers (and backlog) now: the client learns the stream is up.
	if err := rc.Flush(); err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case f, ok := <-sub.Flows():
			if !ok {
				return
			}
			if d := sub.Dropped(); d > lost {
				if err := enc.Encode(lostLine{LostEvents: LostEvents{Count: d - lost}}); err != nil {
					return
				}
				lost = d
			}
			if err := enc.Encode(f); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			sent++
		}
	}
}

// writeError answers with a JSON object shaped like a Kubernetes Status:
// through the API server's node proxy, client-go turns it into an error
// carrying msg (any other body becomes "the server rejected our request
// for an unknown reason").
func writeError(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}

// Stream reads an observe API answer from r, calling fn with every flow
// until r ends (nil), fn fails (its error), decoding fails, or ctx ends
// (ctx.Err()). If r is an io.Closer it is closed when ctx ends, so a
// blocked read returns; an HTTP response body of a request made with ctx
// ends with ctx anyway. Lost-events notices are skipped; see StreamWithLost.
func Stream(ctx context.Context, r io.Reader, fn func(Flow) error) error {
	return StreamWithLost(ctx, r, fn, nil)
}

// StreamWithLost is Stream that also hands lost-events notices to lost
// (nil: skip them).
func StreamWithLost(ctx context.Context, r io.Reader, fn func(Flow) error, lost func(LostEvents) error) error {
	if c, ok := r.(io.Closer); ok {
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		defer stop()
	}
	dec := json.NewDecoder(r)
	for {
		var l line
		err := dec.Decode(&l)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return fmt.Errorf("read flow stream: %w", err)
		case l.LostEvents != nil:
			if lost != nil {
				if err := lost(*l.LostEvents); err != nil {
					return err
				}
			}
		default:
			if err := fn(l.Flow); err != nil {
				return err
			}
		}
	}
}

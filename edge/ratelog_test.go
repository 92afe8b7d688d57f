//go:build linux

package edge

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordHandler keeps what reaches it as "LEVEL msg k=v ..." lines.
type recordHandler struct {
	mu    *sync.Mutex
	lines *[]string
	attrs []slog.Attr
}

func newRecordHandler() *recordHandler {
	return &recordHandler{mu: new(sync.Mutex), lines: new([]string)}
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	*h.lines = append(*h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{mu: h.mu, lines: h.lines, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }

func (h *recordHandler) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := *h.lines
	*h.lines = nil
	return out
}

// TestRateLimitedLog: per message, the first warning goes out at once,
// then at most one per period carrying how many were suppressed; flush
// sums up what was suppressed since; Info and below pass untouched.
func TestRateLimitedLog(t *testing.T) {
	rec := newRecordHandler()
	now := time.Unix(1000, 0)
	h := newRateLimitHandler(rec, 10*time.Second)
	h.st.now = func() time.Time { return now }
	log := slog.New(h)
	at := func(d time.Duration) { now = time.Unix(1000, 0).Add(d) }
	type event struct {
		at    time.Duration
		flush bool // run a periodic flush instead of logging
		level slog.Level
		msg   string
	}
	for _, tc := range []struct {
		name   string
		events []event
		want   []string
	}{
		{"first at once, then one per period with the count", []event{
			{at: 0, level: slog.LevelWarn, msg: "a"},
			{at: time.Second, level: slog.LevelWarn, msg: "a"},
			{at: 2 * time.Second, level: slog.LevelWarn, msg: "a"},
			{at: 10 * time.Second, level: slog.LevelWarn, msg: "a"},
		}, []string{"WARN a", "WARN a suppressed=2"}},
		{"per message", []event{
			{at: 0, level: slog.LevelWarn, msg: "a"},
			{at: 0, level: slog.LevelError, msg: "b"},
			{at: time.Second, level: slog.LevelWarn, msg: "a"},
			{at: time.Second, level: slog.LevelError, msg: "b"},
		}, []string{"WARN a", "ERROR b"}},
		{"info passes", []event{
			{at: 0, level: slog.LevelInfo, msg: "i"},
			{at: 0, level: slog.LevelInfo, msg: "i"},
		}, []string{"INFO i", "INFO i"}},
		{"the flush sums up a storm that stopped", []event{
			{at: 0, level: slog.LevelWarn, msg: "a"},
			{at: time.Second, level: slog.LevelWarn, msg: "a"},
			{at: 2 * time.Second, level: slog.LevelWarn, msg: "a"},
			{at: 5 * time.Second, flush: true}, // too early
			{at: 10 * time.Second, flush: true},
			{at: 20 * time.Second, flush: true}, // nothing new
			{at: 21 * time.Second, level: slog.LevelWarn, msg: "a"},
		}, []string{"WARN a", "WARN edge: log lines suppressed line=a count=2 period=10s", "WARN a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetRate(h.st)
			rec.take()
			for _, e := range tc.events {
				at(e.at)
				if e.flush {
					h.st.flush()
					continue
				}
				log.Log(context.Background(), e.level, e.msg)
			}
			got := rec.take()
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestRateLimitedLogWith: loggers derived with With share the limits of
// their parent and keep their attributes.
func TestRateLimitedLogWith(t *testing.T) {
	rec := newRecordHandler()
	h := newRateLimitHandler(rec, time.Hour)
	log := slog.New(h)
	log.With("port", 1).Warn("a")
	log.With("port", 2).Warn("a")
	got := rec.take()
	if len(got) != 1 || got[0] != "WARN a port=1" {
		t.Errorf("lines %q, want only the first, with its attribute", got)
	}
}

// resetRate forgets every message.
func resetRate(st *rateState) {
	st.mu.Lock()
	clear(st.msgs)
	st.mu.Unlock()
}

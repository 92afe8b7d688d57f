//go:build linux

package edge

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logPeriod is how often a warning of one kind may be logged: a client
// can cause one per datagram or connection, and a log sink that falls
// behind slows the relay (the epoll loops write their lines themselves).
const logPeriod = 10 * time.Second

// rateLimitHandler passes warnings and errors on at most once per period
// per message (the message names the reason: "edge: no origin", "edge:
// accept", ...): the first at once, then the first after each period with
// the number suppressed meanwhile (suppressed=N). What a storm that ended
// left suppressed is summed up by flush. Info and debug lines pass.
type rateLimitHandler struct {
	next slog.Handler
	st   *rateState // shared with the handlers derived by WithAttrs, WithGroup
}

type rateState struct {
	base   slog.Handler // for the summaries
	period time.Duration
	now    func() time.Time

	mu   sync.Mutex
	msgs map[string]*rateMsg
}

// rateMsg is the state of one message.
type rateMsg struct {
	last       time.Time // when a line of it, or its summary, went out
	suppressed int       // lines dropped since
}

func newRateLimitHandler(next slog.Handler, period time.Duration) *rateLimitHandler {
	return &rateLimitHandler{next: next, st: &rateState{base: next, period: period, now: time.Now, msgs: map[string]*rateMsg{}}}
}

// Enabled implements slog.Handler.
func (h *rateLimitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *rateLimitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	n, ok := h.st.admit(r.Message)
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *rateLimitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateLimitHandler{next: h.next.WithAttrs(as), st: h.st}
}

// WithGroup implements slog.Handler.
func (h *rateLimitHandler) WithGroup(name string) slog.Handler {
	return &rateLimitHandler{next: h.next.WithGroup(name), st: h.st}
}

// admit reports whether a line of msg goes out now, and how many were
// suppressed before it.
func (st *rateState) admit(msg string) (suppressed int, ok bool) {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	m := st.msgs[msg]
	if m == nil {
		st.msgs[msg] = &rateMsg{last: now}
		return 0, true
	}
	if now.Sub(m.last) < st.period {
		m.suppressed++
		return 0, false
	}
	n := m.suppressed
	m.last, m.suppressed = now, 0
	return n, true
}

// flush logs a summary of each message with lines suppressed for a whole
// period since its last line went out, and forgets messages quiet as long.
func (st *rateState) flush() {
	now := st.now()
	type summary struct {
		msg string
		n   int
	}
	var out []summary
	st.mu.Lock()
	for msg, m := range st.msgs {
		if now.Sub(m.last) < st.period {
			continue
		}
		if m.suppressed == 0 {
			delete(st.msgs, msg)
			continue
		}
		out = append(out, summary{msg, m.suppressed})
		m.last, m.suppressed = now, 0
	}
	st.mu.Unlock()
	for _, s := range out {
		r := slog.NewRecord(now, slog.LevelWarn, "edge: log lines suppressed", 0)
		r.AddAttrs(slog.String("line", s.msg), slog.Int("count", s.n), slog.Duration("period", st.period))
		st.base.Handle(context.Background(), r)
	}
}

// run flushes every period until ctx is done.
func (st *rateState) run(ctx context.Context) {
	tk := time.NewTicker(st.period)
	defer tk.Stop()
	for {
		select {
		case <-tk.C:
			st.flush()
		case <-ctx.Done():
			return
		}
	}
}

package dst

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// traceHandler writes the warnings and errors a component logs into the
// simulation's trace (a reconciler's skipped device, a run's abandoned
// obligation), with their attributes: a failing seed's trace then says why,
// not only what. It runs on the task that logs, which holds the scheduler.
type traceHandler struct {
	s      *sched
	prefix string
	attrs  []slog.Attr
}

func (h *traceHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *traceHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "log %s %s: %s", h.prefix, r.Level, r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	h.s.log("%s", b.String())
	return nil
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &traceHandler{s: h.s, prefix: h.prefix, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], attrs...)}
}

// WithGroup is flat: the trace is read by people, not parsed.
func (h *traceHandler) WithGroup(string) slog.Handler { return h }

package local

import (
	"context"
	"log/slog"
)

// dedupKeys wraps h so that a record never repeats a top-level key: the
// stack gives each region's and function's logger "region" and "function",
// and the workflows, which log the same keys for Lambda (where nothing else
// adds them), would otherwise write them twice into one JSON object. The
// first value wins: the logger's, then the record's own first.
func dedupKeys(h slog.Handler) slog.Handler { return &dedupHandler{h: h} }

type dedupHandler struct {
	h    slog.Handler
	keys map[string]bool // top-level keys the logger carries already
	// grouped: a group is open, so later attributes are not top level and
	// cannot collide with the logger's.
	grouped bool
}

func (d *dedupHandler) Enabled(ctx context.Context, l slog.Level) bool { return d.h.Enabled(ctx, l) }

func (d *dedupHandler) Handle(ctx context.Context, r slog.Record) error {
	if d.grouped {
		return d.h.Handle(ctx, r)
	}
	seen := make(map[string]bool, r.NumAttrs()+len(d.keys))
	for k := range d.keys {
		seen[k] = true
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !seen[a.Key] || a.Key == "" {
			seen[a.Key] = true
			out.AddAttrs(a)
		}
		return true
	})
	return d.h.Handle(ctx, out)
}

func (d *dedupHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if d.grouped {
		return &dedupHandler{h: d.h.WithAttrs(as), grouped: true}
	}
	keys := make(map[string]bool, len(d.keys)+len(as))
	for k := range d.keys {
		keys[k] = true
	}
	var fresh []slog.Attr
	for _, a := range as {
		if !keys[a.Key] {
			keys[a.Key] = true
			fresh = append(fresh, a)
		}
	}
	return &dedupHandler{h: d.h.WithAttrs(fresh), keys: keys}
}

func (d *dedupHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return d
	}
	return &dedupHandler{h: d.h.WithGroup(name), grouped: true}
}

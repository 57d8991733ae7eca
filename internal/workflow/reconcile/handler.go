package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
)

// Handler is the scheduled Lambda's entry point (lambda.Handler): each
// invocation goes on with the pass where the last one stopped, until its
// deadline, and answers with its report. The scheduler's payload carries
// nothing the reconciler needs.
type Handler struct{ r *Reconciler }

// NewHandler returns the Lambda handler of r.
func NewHandler(r *Reconciler) *Handler { return &Handler{r: r} }

// Invoke runs the reconciler once. A concurrent invocation (the schedule
// fired while one was still running) ends quietly: the other goes on.
func (h *Handler) Invoke(ctx context.Context, _ []byte) ([]byte, error) {
	rep, err := h.r.Run(ctx, Options{})
	if errors.Is(err, ErrConcurrentRun) {
		h.r.log.InfoContext(ctx, "another reconciler invocation is running; this one stops", slog.String("region", h.r.region))
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rep.Findings = rep.Findings[:min(len(rep.Findings), 100)] // the answer stays small; the log has the counts
	return json.Marshal(rep)
}

// Package saga runs a workflow as an in-code saga: an ordered list of steps,
// each an idempotent action with an optional compensating action.
//
// # The failure rule
//
// A step fails either retryably (throttling, a provider outage, a timeout or
// the deadline) or terminally (validation, a 4xx that will not change).
//
//   - Retryable: the SDK's own retryer has already retried the call, so the
//     failure outlived a short outage. The saga stops where it is, compensates
//     nothing and returns an error, so that Lambda re-delivers the event. Every
//     action is idempotent, so the next delivery rolls forward from wherever
//     this one stopped. Rolling back here would throw away good progress, and
//     the rollback itself would most likely fail against the same outage.
//   - Terminal: retrying cannot help, so the completed steps are compensated in
//     reverse order and the registry is left as it was before the run.
//
// # Compensate only what this run changed
//
// A step's action reports whether it changed anything. A resource that existed
// before the run (a Thing created by an earlier run, a certificate registered
// by another region) is reported unchanged and is never undone. Compensations
// must tolerate "not found" and be idempotent: a crash can leave a half-undone
// saga that a re-delivery finishes.
//
// A step whose action fails after it changed something (it returns
// changed=true with its error) is compensated like a step that succeeded.
//
// # Superseded
//
// A step may find that the run's premise no longer holds (the inventory item
// the run converges to changed while it ran): it returns an error wrapping
// ErrSuperseded. The saga stops where it is, compensates nothing and reports
// Superseded, so that its caller converges again to the new truth.
//
// # Compensations that fail are obligations
//
// A compensation that fails is not forgotten: the Result lists it in
// Unfinished with the step's Obligation (a description of the compensation
// as data), and the caller records it where the next run for the same
// resources will find and finish it.
//
// # Time
//
// Steps run with the caller's deadline less a reserve, so that there is time
// left to compensate; compensations run on a context that survives the
// caller's cancellation (context.WithoutCancel) with their own budget, never
// past the caller's deadline.
package saga

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
)

// Step is one step of a saga.
type Step struct {
	// Name names the step in logs, metrics and traces (kebab-case).
	Name string
	// Do performs the step idempotently. It reports changed=true only when
	// this call created or altered a resource; only then is Undo run on
	// rollback.
	Do func(ctx context.Context) (changed bool, err error)
	// Undo compensates Do. Optional. It must treat "not found" as done and be
	// idempotent.
	Undo func(ctx context.Context) error
	// Obligation describes Undo as data, for the caller to record when Undo
	// fails (see Result.Unfinished). It is called only then, so that it may
	// name what the action found or made. Optional.
	Obligation func() any
}

// ErrSuperseded is wrapped by a step error that means the run's premise no
// longer holds: the saga stops without compensating and reports Superseded.
var ErrSuperseded = errors.New("superseded")

// Saga is a named, identified list of steps.
type Saga struct {
	// Name is the workflow, e.g. "jitr".
	Name string
	// ID identifies the run and is derived from the triggering event, so that
	// it is the same across re-deliveries (e.g. "jitr/<certificateId>").
	ID    string
	Steps []Step
}

// State is what happened to one step in a run.
type State string

// Step states.
const (
	NotRun     State = "not_run"     // the saga stopped before this step
	Done       State = "done"        // Do succeeded and changed something
	Unchanged  State = "unchanged"   // Do succeeded; everything was already in place
	Failed     State = "failed"      // Do failed (and changed nothing, or was undone: see Undone)
	Undone     State = "undone"      // Do changed something and Undo reverted it
	UndoFailed State = "undo_failed" // Do changed something and Undo failed: needs attention
)

// Outcome is how a run ended.
type Outcome string

// Saga outcomes.
const (
	Completed          Outcome = "completed"           // every step succeeded
	Stopped            Outcome = "stopped"             // a retryable failure: nothing compensated, retry rolls forward
	RolledBack         Outcome = "rolled_back"         // a terminal failure, every change undone
	CompensationFailed Outcome = "compensation_failed" // a terminal failure and some change could not be undone
	Superseded         Outcome = "superseded"          // a step found the run's premise changed: nothing compensated
)

// StepResult is the record of one step.
type StepResult struct {
	Name     string
	State    State
	Err      error // the action's or the compensation's error
	Duration time.Duration
	// Changed: the action changed something (also when it then failed).
	Changed bool
}

// Unfinished is a compensation that failed: the step, its Obligation and the
// compensation's error.
type Unfinished struct {
	Step       string
	Obligation any
	Err        error
}

// Result is the record of a run: exactly which steps ran, failed, were undone
// or could not be undone.
type Result struct {
	Saga    string
	ID      string
	Outcome Outcome
	Steps   []StepResult
	// Unfinished lists the compensations that failed, in the order they were
	// attempted (reverse step order).
	Unfinished []Unfinished
}

// Step returns the result of the named step (zero value when absent).
func (r Result) Step(name string) StepResult {
	for _, s := range r.Steps {
		if s.Name == name {
			return s
		}
	}
	return StepResult{}
}

// Error is returned by Run when a saga does not complete.
type Error struct {
	Saga, ID string
	Step     string // the step that failed
	Outcome  Outcome
	Cause    error // the step's error
	Undo     error // the joined compensation errors, if any
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("saga %s %s: step %s: %s: %v", e.Saga, e.ID, e.Step, e.Outcome, e.Cause)
	if e.Undo != nil {
		msg += "; compensation: " + strings.ReplaceAll(e.Undo.Error(), "\n", "; ")
	}
	return msg
}

// Unwrap returns the cause joined with the compensation errors.
func (e *Error) Unwrap() []error {
	if e.Undo == nil {
		return []error{e.Cause}
	}
	return []error{e.Cause, e.Undo}
}

// Retryable reports whether the run stopped on a retryable failure.
func (e *Error) Retryable() bool { return e.Outcome == Stopped }

// Class names how an error ends a run, for logs: "retryable" (a later
// delivery can succeed), "superseded" (the run's premise changed; converge
// again) or "terminal" (retrying cannot help).
func Class(err error) string {
	switch {
	case errors.Is(err, ErrSuperseded):
		return "superseded"
	case IsRetryable(err):
		return "retryable"
	}
	return "terminal"
}

// IsRetryable reports whether err is a retryable failure by the rule of this
// package: a transient provider error (fleet.ErrThrottled,
// fleet.ErrUnavailable), a deadline or cancellation, a network timeout, or a
// saga Error that stopped for one of those.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Retryable()
	}
	if errors.Is(err, ErrSuperseded) {
		return false
	}
	if fleet.IsTransient(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Runner runs sagas. The zero value works: no logs, no metrics, no traces.
type Runner struct {
	Log     *slog.Logger
	Metrics obs.Metrics
	Tracer  obs.Tracer
	// Reserve is kept from the caller's deadline for compensation
	// (DefaultReserve when zero).
	Reserve time.Duration
	// UndoBudget bounds all compensations of one run (Reserve when zero).
	UndoBudget time.Duration
	// Classify decides whether a step error is retryable (IsRetryable when nil).
	Classify func(error) bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DefaultReserve is the default share of the deadline kept for compensation.
const DefaultReserve = 3 * time.Second

type attemptKey struct{}

// WithAttempt records in ctx which delivery of the triggering event this is
// (1 for the first), for logs.
func WithAttempt(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, attemptKey{}, n)
}

// Attempt returns the delivery attempt recorded by WithAttempt, 1 if none.
func Attempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(int); ok && n > 0 {
		return n
	}
	return 1
}

// Fill returns r with its unset Log, Metrics, Tracer and Now taken from the
// arguments: a workflow's handler shares its own with the saga it runs.
func (r Runner) Fill(log *slog.Logger, metrics obs.Metrics, tracer obs.Tracer, now func() time.Time) Runner {
	if r.Log == nil {
		r.Log = log
	}
	if r.Metrics == nil {
		r.Metrics = metrics
	}
	if r.Tracer == nil {
		r.Tracer = tracer
	}
	if r.Now == nil {
		r.Now = now
	}
	return r
}

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return obs.Discard()
	}
	return r.Log
}

func (r *Runner) metrics() obs.Metrics {
	if r.Metrics == nil {
		return obs.Nop{}
	}
	return r.Metrics
}

func (r *Runner) tracer() obs.Tracer {
	if r.Tracer == nil {
		return obs.NopTracer{}
	}
	return r.Tracer
}

func (r *Runner) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

func (r *Runner) reserve() time.Duration {
	if r.Reserve <= 0 {
		return DefaultReserve
	}
	return r.Reserve
}

func (r *Runner) retryable(err error) bool {
	if r.Classify != nil {
		return r.Classify(err)
	}
	return IsRetryable(err)
}

// Run runs s. It returns a Result in every case, and a *Error when the saga
// did not complete.
func (r *Runner) Run(ctx context.Context, s Saga) (Result, error) {
	res := Result{Saga: s.Name, ID: s.ID, Steps: make([]StepResult, len(s.Steps))}
	for i, st := range s.Steps {
		res.Steps[i] = StepResult{Name: st.Name, State: NotRun}
	}
	stepCtx, cancel := r.stepContext(ctx)
	defer cancel()
	stepCtx, endSaga := r.tracer().Start(stepCtx, s.Name)
	attempt := Attempt(ctx)
	for i, st := range s.Steps {
		start := r.now()
		sctx, end := r.tracer().Start(stepCtx, s.Name+"/"+st.Name)
		changed, err := r.do(sctx, st)
		end(err)
		sr := &res.Steps[i]
		sr.Duration = r.now().Sub(start)
		sr.Changed = changed
		switch {
		case err == nil && changed:
			sr.State = Done
		case err == nil:
			sr.State = Unchanged
		default:
			sr.State, sr.Err = Failed, err
		}
		r.record(ctx, s, st.Name, string(sr.State), attempt, sr.Duration, err)
		if err == nil {
			continue
		}
		if errors.Is(err, ErrSuperseded) || r.retryable(err) {
			res.Outcome = Stopped
			if errors.Is(err, ErrSuperseded) {
				res.Outcome = Superseded
			}
			r.finish(ctx, s, res, attempt)
			endSaga(err)
			return res, &Error{Saga: s.Name, ID: s.ID, Step: st.Name, Outcome: res.Outcome, Cause: err}
		}
		// A failed action that changed something is compensated with the
		// steps before it.
		undone := res.Steps[:i]
		if changed {
			undone = res.Steps[:i+1]
		}
		var undoErr error
		res.Unfinished, undoErr = r.compensate(ctx, s, undone, attempt)
		res.Outcome = RolledBack
		if undoErr != nil {
			res.Outcome = CompensationFailed
		}
		r.finish(ctx, s, res, attempt)
		e := &Error{Saga: s.Name, ID: s.ID, Step: st.Name, Outcome: res.Outcome, Cause: err, Undo: undoErr}
		endSaga(e)
		return res, e
	}
	res.Outcome = Completed
	r.finish(ctx, s, res, attempt)
	endSaga(nil)
	return res, nil
}

// do runs one action, turning a panic into a terminal error so that a bug in
// one step still rolls the saga back instead of killing the process half-way.
func (r *Runner) do(ctx context.Context, st Step) (changed bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			changed, err = false, fmt.Errorf("step %s panicked: %v", st.Name, p)
		}
	}()
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("before step %s: %w", st.Name, err)
	}
	return st.Do(ctx)
}

func (r *Runner) undo(ctx context.Context, st Step) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("compensation of %s panicked: %v", st.Name, p)
		}
	}()
	return st.Undo(ctx)
}

// stepContext keeps the reserve off the caller's deadline.
func (r *Runner) stepContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	reserve := r.reserve()
	if remaining := dl.Sub(r.now()); remaining < 2*reserve {
		// Too little time to keep a full reserve: split what there is.
		reserve = remaining / 2
	}
	return context.WithDeadline(ctx, dl.Add(-reserve))
}

// compensate undoes, in reverse order, the steps in done that changed
// something. It runs on a context that survives the caller's cancellation,
// for at most the undo budget and never past the caller's deadline. It
// returns the compensations that failed.
func (r *Runner) compensate(ctx context.Context, s Saga, done []StepResult, attempt int) ([]Unfinished, error) {
	budget := r.UndoBudget
	if budget <= 0 {
		budget = r.reserve()
	}
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, dl.Sub(r.now()))
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(budget, 0))
	defer cancel()
	var errs []error
	var unfinished []Unfinished
	for i := len(done) - 1; i >= 0; i-- {
		sr := &done[i]
		st := s.Steps[i]
		if !sr.Changed || st.Undo == nil {
			continue
		}
		start := r.now()
		sctx, end := r.tracer().Start(uctx, s.Name+"/undo-"+st.Name)
		err := r.undo(sctx, st)
		end(err)
		if err != nil && errors.Is(err, fleet.ErrNotFound) {
			err = nil // null compensation: already gone
		}
		dur := r.now().Sub(start)
		if err != nil {
			sr.State, sr.Err = UndoFailed, err
			errs = append(errs, fmt.Errorf("undo %s: %w", st.Name, err))
			u := Unfinished{Step: st.Name, Err: err}
			if st.Obligation != nil {
				u.Obligation = st.Obligation()
			}
			unfinished = append(unfinished, u)
		} else {
			sr.State = Undone
		}
		r.record(ctx, s, "undo-"+st.Name, string(sr.State), attempt, dur, err)
	}
	return unfinished, errors.Join(errs...)
}

func (r *Runner) record(ctx context.Context, s Saga, step, outcome string, attempt int, d time.Duration, err error) {
	attrs := []slog.Attr{
		slog.String("saga", s.Name), slog.String("sagaId", s.ID), slog.String("step", step),
		slog.String("outcome", outcome), slog.Int("attempt", attempt),
		slog.Float64("durationMs", float64(d.Microseconds())/1000),
	}
	// A step that did its work is the run's business, told at INFO by its
	// one "saga finished" line; the step itself is DEBUG. A failure or a
	// compensation is told as it happens.
	level := slog.LevelDebug
	if outcome != string(Done) && outcome != string(Unchanged) {
		level = slog.LevelInfo
	}
	if err != nil {
		level = slog.LevelWarn
		if outcome == string(UndoFailed) {
			level = slog.LevelError
		}
		class := "terminal"
		switch {
		case errors.Is(err, ErrSuperseded):
			class = "superseded"
		case r.retryable(err):
			class = "retryable"
		}
		attrs = append(attrs, slog.String("error", err.Error()), slog.String("class", class))
	}
	r.log().LogAttrs(ctx, level, "saga step", attrs...)
	// Steps that did their work are counted by SagaOutcome; a step that
	// failed, was undone or could not be undone is counted on its own.
	if level > slog.LevelDebug {
		r.metrics().Count("StepOutcome", 1, obs.D("Saga", s.Name), obs.D("Step", step), obs.D("Outcome", outcome))
	}
}

func (r *Runner) finish(ctx context.Context, s Saga, res Result, attempt int) {
	level := slog.LevelInfo
	switch res.Outcome {
	case Superseded:
		level = slog.LevelInfo
	case Stopped, RolledBack:
		level = slog.LevelWarn
	case CompensationFailed:
		level = slog.LevelError
		r.metrics().Count("CompensationFailed", 1, obs.D("Saga", s.Name))
	}
	steps := make([]string, len(res.Steps))
	for i, sr := range res.Steps {
		steps[i] = sr.Name + "=" + string(sr.State)
	}
	r.log().LogAttrs(ctx, level, "saga finished",
		slog.String("saga", s.Name), slog.String("sagaId", s.ID), slog.String("outcome", string(res.Outcome)),
		slog.Int("attempt", attempt), slog.String("steps", strings.Join(steps, ",")))
	r.metrics().Count("SagaOutcome", 1, obs.D("Saga", s.Name), obs.D("Outcome", string(res.Outcome)))
}

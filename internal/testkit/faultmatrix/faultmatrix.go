// Package faultmatrix runs a workflow's fault matrix: for every call k the
// workflow makes to its fakes,
//
//	(a) a terminal failure at k leaves the state exactly as before, or, at a
//	    call after the clean run's last mutating call (nothing is left to
//	    undo: the last change, activation, has no compensation), exactly as
//	    a clean run leaves it; either way the delivery reports an error;
//	(b) a retryable failure at k compensates nothing, and a redelivery
//	    converges to the state of a clean run;
//	(c) a crash right after the k-th mutating call (no compensation runs)
//	    followed by a redelivery converges;
//	(d) a duplicate delivery after a clean run changes nothing.
//
// A roll-forward scenario (Scenario.RollForward: convergence toward a more
// restrictive state, which is never compensated by granting access back)
// replaces (a) with
//
//	(a') a terminal failure at k reports a terminal error, makes no
//	     mutating call after the failure, and a redelivery converges to the
//	     state of a clean run.
//
// The checker returns an error rather than failing a test, so that a test can
// also prove that the matrix notices a broken compensation. It is test
// support for the workflow packages.
package faultmatrix

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/fake/memiot"
)

// Call is one call a workflow made to a fake.
type Call struct {
	Service  string // "iot" or "ddb"
	Op       string // the AWS operation name
	Mutating bool
	// Succeeded: the call returned without error (a conditional write
	// refused by its condition changes nothing and does not count).
	Succeeded bool
}

// changes reports whether the call changed state.
func (c Call) changes() bool { return c.Mutating && c.Succeeded }

func (c Call) String() string { return c.Service + ":" + c.Op }

// Mutating reports whether an AWS operation name changes state.
func Mutating(op string) bool {
	for _, p := range []string{"Create", "Register", "Update", "Delete", "Attach", "Detach", "Put", "BatchWrite", "TransactWrite"} {
		if strings.HasPrefix(op, p) {
			return true
		}
	}
	return false
}

// Mode is the fault an Injector injects.
type Mode int

// Fault modes.
const (
	None      Mode = iota
	Terminal       // the k-th call fails with an invalid-request error
	Retryable      // the k-th call fails with a throttling error
	Crash          // the goroutine ends right after the k-th mutating call
)

// Injector records the calls and injects one fault. Wire Before and After
// into every fake of a world (memiot SetHook/SetAfter, memddb
// Table.SetHook/SetAfter).
type Injector struct {
	mu    sync.Mutex
	calls []Call
	mode  Mode
	k     int
	n, m  int // calls and mutating calls seen
	fired int // index in calls of the injected fault, -1 before
}

// NewInjector returns an Injector that injects nothing.
func NewInjector() *Injector { return &Injector{fired: -1} }

// Set arms the injector: mode at the k-th call (1-based; for Crash, the
// k-th mutating call). It resets the record.
func (in *Injector) Set(mode Mode, k int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.mode, in.k, in.n, in.m, in.calls, in.fired = mode, k, 0, 0, nil, -1
}

// Calls returns the calls recorded since the last Set.
func (in *Injector) Calls() []Call {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Call(nil), in.calls...)
}

// Before is the hook of service's fake.
func (in *Injector) Before(service string) func(ctx context.Context, op string) error {
	return func(_ context.Context, op string) error {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.n++
		in.calls = append(in.calls, Call{Service: service, Op: op, Mutating: Mutating(op)})
		if in.n != in.k {
			return nil
		}
		switch in.mode {
		case Terminal:
			in.fired = len(in.calls) - 1
			if service == "iot" {
				return memiot.Invalid(op)
			}
			return fmt.Errorf("%s: ValidationException: injected: %w", op, fleet.ErrInvalid)
		case Retryable:
			in.fired = len(in.calls) - 1
			if service == "iot" {
				return memiot.Throttled(op)
			}
			return fmt.Errorf("%s: ProvisionedThroughputExceededException: injected: %w", op, fleet.ErrThrottled)
		}
		return nil
	}
}

// After is the after-call hook of service's fake: it ends the calling
// goroutine after the k-th mutating call in Crash mode.
func (in *Injector) After(service string) func(ctx context.Context, op string) {
	return func(_ context.Context, op string) {
		in.mu.Lock()
		for i := len(in.calls) - 1; i >= 0; i-- {
			if c := &in.calls[i]; c.Service == service && c.Op == op && !c.Succeeded {
				c.Succeeded = true
				break
			}
		}
		if !Mutating(op) {
			in.mu.Unlock()
			return
		}
		in.m++
		crash := in.mode == Crash && in.m == in.k
		in.mu.Unlock()
		if crash {
			runtime.Goexit()
		}
	}
}

// World is one fresh set of fakes with the workflow wired to them.
type World struct {
	// Deliver delivers the scenario's event once.
	Deliver func(ctx context.Context) error
	// State returns a deep copy of everything the workflow may change; two
	// states are compared with reflect.DeepEqual.
	State func() any
	// Close releases the world (may be nil).
	Close func()
}

// Scenario builds fresh worlds whose fakes are wired to the injector.
type Scenario struct {
	Name string
	New  func(in *Injector) (*World, error)
	// RollForward: the workflow converges toward a more restrictive state
	// and rolls forward only (see (a')).
	RollForward bool
}

// deliver runs one delivery on its own goroutine, so that a crash ends only it.
func deliver(w *World) (err error, crashed bool) {
	done := make(chan struct{})
	finished := false
	go func() {
		defer close(done)
		err = w.Deliver(context.Background())
		finished = true
	}()
	<-done
	return err, !finished
}

func open(s Scenario, in *Injector) (*World, error) {
	w, err := s.New(in)
	if err != nil {
		return nil, fmt.Errorf("%s: new world: %w", s.Name, err)
	}
	return w, nil
}

func closeWorld(w *World) {
	if w != nil && w.Close != nil {
		w.Close()
	}
}

// Run runs the whole matrix of s and returns every violation found, joined
// (nil when the workflow passes). It also returns the calls of a clean run.
func Run(s Scenario) ([]Call, error) {
	in := NewInjector()
	w, err := open(s, in)
	if err != nil {
		return nil, err
	}
	in.Set(None, 0)
	if err, crashed := deliver(w); err != nil || crashed {
		closeWorld(w)
		return nil, fmt.Errorf("%s: clean run: err=%v crashed=%v", s.Name, err, crashed)
	}
	clean := in.Calls()
	final := w.State()
	var errs []error
	// (d) a duplicate delivery changes nothing.
	in.Set(None, 0)
	if err, _ := deliver(w); err != nil {
		errs = append(errs, fmt.Errorf("%s (d) duplicate: %w", s.Name, err))
	}
	for _, c := range in.Calls() {
		if c.changes() {
			errs = append(errs, fmt.Errorf("%s (d) duplicate called %s", s.Name, c))
		}
	}
	if st := w.State(); !reflect.DeepEqual(st, final) {
		errs = append(errs, fmt.Errorf("%s (d) duplicate changed the state: %s", s.Name, diff(final, st)))
	}
	closeWorld(w)

	mutating, last := 0, -1
	for k, c := range clean {
		if c.changes() {
			mutating, last = mutating+1, k
		}
	}
	for k, c := range clean {
		want := any(nil) // the state before the delivery
		if k > last {
			want = final
		}
		if s.RollForward {
			errs = append(errs, rollForward(s, k+1, c, final)...)
		} else {
			errs = append(errs, terminal(s, k+1, c, want)...)
		}
		errs = append(errs, retryable(s, k+1, c, final)...)
	}
	for m := 1; m <= mutating; m++ {
		errs = append(errs, crash(s, m, final)...)
	}
	return clean, errors.Join(errs...)
}

// terminal checks (a) at call k: the state must be as before the delivery,
// or want when it is not nil (a failure after the last change).
func terminal(s Scenario, k int, c Call, want any) []error {
	in := NewInjector()
	w, err := open(s, in)
	if err != nil {
		return []error{err}
	}
	defer closeWorld(w)
	before := w.State()
	if want != nil {
		before = want
	}
	in.Set(Terminal, k)
	err, crashed := deliver(w)
	var errs []error
	name := fmt.Sprintf("%s (a) terminal failure at call %d %s", s.Name, k, c)
	switch {
	case crashed:
		errs = append(errs, fmt.Errorf("%s: crashed", name))
	case err == nil:
		errs = append(errs, fmt.Errorf("%s: delivery succeeded; want an error (the event must reach the on-failure destination)", name))
	case saga.IsRetryable(err):
		errs = append(errs, fmt.Errorf("%s: error is retryable: %w", name, err))
	}
	if st := w.State(); !reflect.DeepEqual(st, before) {
		errs = append(errs, fmt.Errorf("%s: state not restored: %s", name, diff(before, st)))
	}
	return errs
}

// rollForward checks (a') at call k.
func rollForward(s Scenario, k int, c Call, final any) []error {
	return afterFailure(s, k, c, final, Terminal, "(a') terminal failure", func(err error) error {
		if saga.IsRetryable(err) {
			return fmt.Errorf("error is retryable: %w", err)
		}
		return nil
	})
}

func retryable(s Scenario, k int, c Call, final any) []error {
	return afterFailure(s, k, c, final, Retryable, "(b) retryable failure", func(err error) error {
		if !saga.IsRetryable(err) {
			return fmt.Errorf("error is not retryable: %w", err)
		}
		return nil
	})
}

// afterFailure injects mode at call k, checks the delivery's error with
// check, that nothing changed after the failure, and that a redelivery
// converges to final.
func afterFailure(s Scenario, k int, c Call, final any, mode Mode, what string, check func(error) error) []error {
	in := NewInjector()
	w, err := open(s, in)
	if err != nil {
		return []error{err}
	}
	defer closeWorld(w)
	in.Set(mode, k)
	err, crashed := deliver(w)
	var errs []error
	name := fmt.Sprintf("%s %s at call %d %s", s.Name, what, k, c)
	switch {
	case crashed:
		errs = append(errs, fmt.Errorf("%s: crashed", name))
	case err == nil:
		errs = append(errs, fmt.Errorf("%s: delivery succeeded; want an error", name))
	default:
		if cerr := check(err); cerr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, cerr))
		}
	}
	calls := in.Calls()
	for _, after := range calls[min(k, len(calls)):] {
		if after.changes() {
			errs = append(errs, fmt.Errorf("%s: compensated or went on: called %s after the failure", name, after))
		}
	}
	in.Set(None, 0)
	if err, crashed := deliver(w); err != nil || crashed {
		errs = append(errs, fmt.Errorf("%s: redelivery: err=%v crashed=%v", name, err, crashed))
	}
	if st := w.State(); !reflect.DeepEqual(st, final) {
		errs = append(errs, fmt.Errorf("%s: redelivery did not converge: %s", name, diff(final, st)))
	}
	return errs
}

func crash(s Scenario, m int, final any) []error {
	in := NewInjector()
	w, err := open(s, in)
	if err != nil {
		return []error{err}
	}
	defer closeWorld(w)
	in.Set(Crash, m)
	_, crashed := deliver(w)
	name := fmt.Sprintf("%s (c) crash after mutating call %d", s.Name, m)
	var errs []error
	if !crashed {
		errs = append(errs, fmt.Errorf("%s: the run did not reach that call", name))
	}
	if c := lastMutating(in.Calls()); c != "" {
		name += " " + c
	}
	in.Set(None, 0)
	if err, crashed := deliver(w); err != nil || crashed {
		errs = append(errs, fmt.Errorf("%s: redelivery: err=%v crashed=%v", name, err, crashed))
	}
	if st := w.State(); !reflect.DeepEqual(st, final) {
		errs = append(errs, fmt.Errorf("%s: redelivery did not converge: %s", name, diff(final, st)))
	}
	return errs
}

func lastMutating(calls []Call) string {
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].changes() {
			return calls[i].String()
		}
	}
	return ""
}

// diff describes two states that differ, briefly.
func diff(want, got any) string {
	const limit = 700
	clip := func(s string) string {
		if len(s) > limit {
			return s[:limit] + "…"
		}
		return s
	}
	if d, ok := want.(interface{ Diff(any) string }); ok {
		return d.Diff(got)
	}
	return "want " + clip(fmt.Sprintf("%+v", want)) + "\n got " + clip(fmt.Sprintf("%+v", got))
}

// matches reports whether a step is name or one of a family "name/...".
func matches(step, name string) bool {
	return step == name || strings.HasPrefix(step, name+"/")
}

// DropUndo returns a step rewrite that removes the compensation of the named
// step (or family of steps "name/..."): a broken workflow that the matrix must catch.
func DropUndo(name string) func([]saga.Step) []saga.Step {
	return func(steps []saga.Step) []saga.Step {
		out := append([]saga.Step(nil), steps...)
		for i := range out {
			if matches(out[i].Name, name) {
				out[i].Undo = nil
			}
		}
		return out
	}
}

// AlwaysChanged returns a step rewrite that makes the named step report a
// change even when its resource existed before: its compensation then
// deletes a pre-existing resource, which the matrix must catch.
func AlwaysChanged(name string) func([]saga.Step) []saga.Step {
	return func(steps []saga.Step) []saga.Step {
		out := append([]saga.Step(nil), steps...)
		for i := range out {
			if !matches(out[i].Name, name) {
				continue
			}
			do := out[i].Do
			out[i].Do = func(ctx context.Context) (bool, error) {
				_, err := do(ctx)
				return true, err
			}
		}
		return out
	}
}

package saga_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// world is a toy registry: a set of resources, some pre-existing.
type world struct {
	have  map[string]bool
	calls []string
}

func newWorld(pre ...string) *world {
	w := &world{have: map[string]bool{}}
	for _, p := range pre {
		w.have[p] = true
	}
	return w
}

// ensure returns a step that creates res unless it exists, failing with err
// (if any) before doing anything.
func (w *world) ensure(res string, err error) saga.Step {
	return saga.Step{
		Name: "ensure-" + res,
		Do: func(context.Context) (bool, error) {
			w.calls = append(w.calls, "do "+res)
			if err != nil {
				return false, err
			}
			if w.have[res] {
				return false, nil
			}
			w.have[res] = true
			return true, nil
		},
		Undo: func(context.Context) error {
			w.calls = append(w.calls, "undo "+res)
			if !w.have[res] {
				return fmt.Errorf("delete %s: %w", res, fleet.ErrNotFound)
			}
			delete(w.have, res)
			return nil
		},
	}
}

func TestOutcomes(t *testing.T) {
	terminal := fmt.Errorf("attach policy: %w", fleet.ErrInvalid)
	throttled := fmt.Errorf("attach policy: %w", fleet.ErrThrottled)
	tests := []struct {
		name      string
		pre       []string
		failAt    string
		err       error
		outcome   saga.Outcome
		states    map[string]saga.State
		have      []string
		calls     string
		retryable bool
	}{
		{
			name: "all steps run", outcome: saga.Completed,
			states: map[string]saga.State{"ensure-a": saga.Done, "ensure-b": saga.Done, "ensure-c": saga.Done},
			have:   []string{"a", "b", "c"}, calls: "do a,do b,do c",
		},
		{
			name: "pre-existing resources are unchanged", pre: []string{"a"}, outcome: saga.Completed,
			states: map[string]saga.State{"ensure-a": saga.Unchanged, "ensure-b": saga.Done, "ensure-c": saga.Done},
			have:   []string{"a", "b", "c"}, calls: "do a,do b,do c",
		},
		{
			name: "terminal failure undoes in reverse order", failAt: "c", err: terminal, outcome: saga.RolledBack,
			states: map[string]saga.State{"ensure-a": saga.Undone, "ensure-b": saga.Undone, "ensure-c": saga.Failed},
			have:   nil, calls: "do a,do b,do c,undo b,undo a",
		},
		{
			name: "terminal failure never undoes what existed before", pre: []string{"a"}, failAt: "c", err: terminal, outcome: saga.RolledBack,
			states: map[string]saga.State{"ensure-a": saga.Unchanged, "ensure-b": saga.Undone, "ensure-c": saga.Failed},
			have:   []string{"a"}, calls: "do a,do b,do c,undo b",
		},
		{
			name: "retryable failure compensates nothing", failAt: "c", err: throttled, outcome: saga.Stopped,
			states: map[string]saga.State{"ensure-a": saga.Done, "ensure-b": saga.Done, "ensure-c": saga.Failed},
			have:   []string{"a", "b"}, calls: "do a,do b,do c", retryable: true,
		},
		{
			name: "deadline is retryable", failAt: "b", err: context.DeadlineExceeded, outcome: saga.Stopped,
			states: map[string]saga.State{"ensure-a": saga.Done, "ensure-b": saga.Failed, "ensure-c": saga.NotRun},
			have:   []string{"a"}, calls: "do a,do b", retryable: true,
		},
		{
			name: "terminal failure at the first step has nothing to undo", failAt: "a", err: terminal, outcome: saga.RolledBack,
			states: map[string]saga.State{"ensure-a": saga.Failed, "ensure-b": saga.NotRun, "ensure-c": saga.NotRun},
			calls:  "do a",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(tc.pre...)
			var steps []saga.Step
			for _, r := range []string{"a", "b", "c"} {
				var err error
				if r == tc.failAt {
					err = tc.err
				}
				steps = append(steps, w.ensure(r, err))
			}
			rec := obs.NewRecorder()
			r := &saga.Runner{Metrics: rec}
			res, err := r.Run(context.Background(), saga.Saga{Name: "toy", ID: "toy/1", Steps: steps})
			if res.Outcome != tc.outcome {
				t.Fatalf("outcome %s, want %s (err %v)", res.Outcome, tc.outcome, err)
			}
			if (err == nil) != (tc.outcome == saga.Completed) {
				t.Fatalf("err = %v for outcome %s", err, res.Outcome)
			}
			if err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("error %v does not wrap the cause %v", err, tc.err)
				}
				if saga.IsRetryable(err) != tc.retryable {
					t.Errorf("IsRetryable = %v, want %v", saga.IsRetryable(err), tc.retryable)
				}
			}
			for name, want := range tc.states {
				if got := res.Step(name).State; got != want {
					t.Errorf("step %s: %s, want %s", name, got, want)
				}
			}
			var have []string
			for _, r := range []string{"a", "b", "c"} {
				if w.have[r] {
					have = append(have, r)
				}
			}
			if strings.Join(have, ",") != strings.Join(tc.have, ",") {
				t.Errorf("resources %v, want %v", have, tc.have)
			}
			if got := strings.Join(w.calls, ","); got != tc.calls {
				t.Errorf("calls %s, want %s", got, tc.calls)
			}
			if got := rec.Get("SagaOutcome", obs.D("Saga", "toy"), obs.D("Outcome", string(tc.outcome))); got != 1 {
				t.Errorf("SagaOutcome metric = %v", got)
			}
		})
	}
}

func TestCompensationFailureIsJoinedLoggedAndCounted(t *testing.T) {
	boom := errors.New("iot unavailable during undo")
	cause := fmt.Errorf("activate: %w", fleet.ErrInvalid)
	var undone []string
	steps := []saga.Step{
		{Name: "one", Do: func(context.Context) (bool, error) { return true, nil },
			Undo: func(context.Context) error { undone = append(undone, "one"); return nil }},
		{Name: "two", Do: func(context.Context) (bool, error) { return true, nil },
			Undo: func(context.Context) error { undone = append(undone, "two"); return boom }},
		{Name: "gone", Do: func(context.Context) (bool, error) { return true, nil },
			Undo: func(context.Context) error {
				undone = append(undone, "gone")
				return fmt.Errorf("delete: %w", fleet.ErrNotFound)
			}},
		{Name: "three", Do: func(context.Context) (bool, error) { return false, cause }},
	}
	var logs bytes.Buffer
	rec := obs.NewRecorder()
	r := &saga.Runner{Log: obs.NewLogger(&logs, "debug"), Metrics: rec}
	res, err := r.Run(context.Background(), saga.Saga{Name: "s", ID: "s/1", Steps: steps})
	if res.Outcome != saga.CompensationFailed {
		t.Fatalf("outcome %s", res.Outcome)
	}
	if !errors.Is(err, cause) || !errors.Is(err, boom) {
		t.Fatalf("error %v must join the cause and the compensation error", err)
	}
	if got := strings.Join(undone, ","); got != "gone,two,one" {
		t.Errorf("undo order %s: a failed undo must not stop the others", got)
	}
	want := map[string]saga.State{"one": saga.Undone, "two": saga.UndoFailed, "gone": saga.Undone, "three": saga.Failed}
	for n, s := range want {
		if got := res.Step(n).State; got != s {
			t.Errorf("step %s: %s, want %s", n, got, s)
		}
	}
	if rec.Get("CompensationFailed", obs.D("Saga", "s")) != 1 {
		t.Error("CompensationFailed not counted")
	}
	// Every step logs saga, saga id, step, outcome, attempt and duration.
	var sawUndoFailed bool
	for line := range bytes.SplitSeq(bytes.TrimSpace(logs.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["msg"] != "saga step" {
			continue
		}
		for _, k := range []string{"saga", "sagaId", "step", "outcome", "attempt", "durationMs"} {
			if _, ok := m[k]; !ok {
				t.Errorf("log line lacks %s: %s", k, line)
			}
		}
		if m["outcome"] == string(saga.UndoFailed) {
			sawUndoFailed = m["level"] == "ERROR"
		}
	}
	if !sawUndoFailed {
		t.Error("no ERROR log line for the failed compensation")
	}
}

func TestCompensationSurvivesCancellationAndReserveIsKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	var stepDeadline time.Time
	var undoErr error
	steps := []saga.Step{
		{Name: "create", Do: func(ctx context.Context) (bool, error) {
			stepDeadline, _ = ctx.Deadline()
			return true, nil
		}, Undo: func(ctx context.Context) error {
			undoErr = ctx.Err()
			return nil
		}},
		{Name: "fail", Do: func(context.Context) (bool, error) {
			cancel() // the invocation is cancelled while the saga fails terminally
			return false, fleet.ErrInvalid
		}},
	}
	r := &saga.Runner{Reserve: 100 * time.Millisecond}
	outer, _ := ctx.Deadline()
	res, _ := r.Run(ctx, saga.Saga{Name: "s", ID: "1", Steps: steps})
	if res.Outcome != saga.RolledBack {
		t.Fatalf("outcome %s", res.Outcome)
	}
	if undoErr != nil {
		t.Errorf("compensation saw a cancelled context: %v", undoErr)
	}
	if got := outer.Sub(stepDeadline); got < 90*time.Millisecond {
		t.Errorf("steps ran with only %v kept in reserve", got)
	}
}

func TestStepsStopWhenTheDeadlineLeavesNoTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		time.Sleep(5 * time.Millisecond) // the bubble's clock: the deadline has passed
		ran := false
		r := &saga.Runner{}
		res, err := r.Run(ctx, saga.Saga{Name: "s", ID: "1", Steps: []saga.Step{{Name: "x", Do: func(context.Context) (bool, error) { ran = true; return true, nil }}}})
		if ran || res.Outcome != saga.Stopped || !saga.IsRetryable(err) {
			t.Fatalf("ran=%v outcome=%s err=%v; want a retryable stop before the step", ran, res.Outcome, err)
		}
	})
}

func TestPanicInStepRollsBack(t *testing.T) {
	w := newWorld()
	steps := []saga.Step{w.ensure("a", nil), {Name: "bug", Do: func(context.Context) (bool, error) { panic("nil map") }}}
	res, err := (&saga.Runner{}).Run(context.Background(), saga.Saga{Name: "s", ID: "1", Steps: steps})
	if res.Outcome != saga.RolledBack || err == nil || w.have["a"] {
		t.Fatalf("outcome %s err %v have %v", res.Outcome, err, w.have)
	}
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fleet.ErrThrottled, true},
		{fmt.Errorf("x: %w", fleet.ErrUnavailable), true},
		{context.DeadlineExceeded, true},
		{context.Canceled, true},
		{fleet.ErrInvalid, false},
		{fleet.ErrNotFound, false},
		{fleet.ErrConditionFailed, false},
		{errors.New("plain"), false},
		{&saga.Error{Outcome: saga.Stopped, Cause: fleet.ErrThrottled}, true},
		{&saga.Error{Outcome: saga.RolledBack, Cause: fleet.ErrInvalid}, false},
	}
	for _, tc := range tests {
		if got := saga.IsRetryable(tc.err); got != tc.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestAttempt(t *testing.T) {
	if saga.Attempt(context.Background()) != 1 {
		t.Error("default attempt is not 1")
	}
	if saga.Attempt(saga.WithAttempt(context.Background(), 3)) != 3 {
		t.Error("attempt not carried")
	}
}

func TestFillKeepsWhatIsSet(t *testing.T) {
	own := obs.NewRecorder()
	r := saga.Runner{Metrics: own}.Fill(obs.Discard(), obs.NewRecorder(), obs.NopTracer{}, time.Now)
	if r.Metrics != own || r.Log == nil || r.Tracer == nil || r.Now == nil {
		t.Errorf("Fill = %+v", r)
	}
}

// TestSupersededStopsWithoutCompensating: a step that finds the run's
// premise changed stops the saga; nothing is undone, and the error says
// superseded (neither retryable nor terminal).
func TestSupersededStopsWithoutCompensating(t *testing.T) {
	w := newWorld()
	changed := fmt.Errorf("the item is version 2 now: %w", saga.ErrSuperseded)
	var r saga.Runner
	res, err := r.Run(context.Background(), saga.Saga{Name: "t", ID: "t/1", Steps: []saga.Step{
		w.ensure("a", nil), w.ensure("b", changed), w.ensure("c", nil),
	}})
	if res.Outcome != saga.Superseded || !errors.Is(err, saga.ErrSuperseded) {
		t.Fatalf("outcome %s, err %v; want superseded", res.Outcome, err)
	}
	if saga.IsRetryable(err) || saga.Class(err) != "superseded" {
		t.Errorf("IsRetryable %v, Class %q", saga.IsRetryable(err), saga.Class(err))
	}
	if strings.Contains(strings.Join(w.calls, ","), "undo") || !w.have["a"] {
		t.Errorf("calls %v, have %v: a superseded run undid something", w.calls, w.have)
	}
}

// TestPartialChangeIsCompensated: an action that changed something and then
// failed terminally (it reports changed=true with its error) is undone with
// the steps before it.
func TestPartialChangeIsCompensated(t *testing.T) {
	w := newWorld()
	partial := saga.Step{
		Name: "register-then-fail",
		Do: func(context.Context) (bool, error) {
			w.have["cert"] = true
			return true, fmt.Errorf("describe after register: %w", fleet.ErrInvalid)
		},
		Undo: func(context.Context) error {
			delete(w.have, "cert")
			w.calls = append(w.calls, "undo cert")
			return nil
		},
	}
	var r saga.Runner
	res, err := r.Run(context.Background(), saga.Saga{Name: "t", ID: "t/2", Steps: []saga.Step{w.ensure("a", nil), partial}})
	if err == nil || res.Outcome != saga.RolledBack {
		t.Fatalf("outcome %s, err %v; want rolled back", res.Outcome, err)
	}
	if w.have["cert"] || w.have["a"] {
		t.Errorf("left behind: %v", w.have)
	}
	if st := res.Step("register-then-fail"); st.State != saga.Undone || !st.Changed {
		t.Errorf("step %+v, want undone (changed)", st)
	}
}

// TestFailedCompensationIsReportedAsAnObligation: a compensation that fails
// is listed in Unfinished with its step's obligation, in the order tried.
func TestFailedCompensationIsReportedAsAnObligation(t *testing.T) {
	w := newWorld()
	throttled := fmt.Errorf("detach: %w", fleet.ErrThrottled)
	failingUndo := func(name string) saga.Step {
		st := w.ensure(name, nil)
		st.Undo = func(context.Context) error { return throttled }
		st.Obligation = func() any { return "detach " + name }
		return st
	}
	var r saga.Runner
	res, err := r.Run(context.Background(), saga.Saga{Name: "t", ID: "t/3", Steps: []saga.Step{
		failingUndo("a"), w.ensure("b", nil), failingUndo("c"), w.ensure("d", fmt.Errorf("boom: %w", fleet.ErrInvalid)),
	}})
	if res.Outcome != saga.CompensationFailed || err == nil {
		t.Fatalf("outcome %s, err %v", res.Outcome, err)
	}
	if len(res.Unfinished) != 2 || res.Unfinished[0].Obligation != "detach c" || res.Unfinished[1].Obligation != "detach a" ||
		!errors.Is(res.Unfinished[0].Err, fleet.ErrThrottled) {
		t.Errorf("unfinished %+v, want c then a with their obligations", res.Unfinished)
	}
	if w.have["b"] {
		t.Error("b was not undone")
	}
}

// TestUndoBudgetStopsAtTheCallersDeadline: compensations never run past the
// deadline of the run that called them, whatever the undo budget.
func TestUndoBudgetStopsAtTheCallersDeadline(t *testing.T) {
	var undoDeadline time.Time
	steps := []saga.Step{
		{Name: "a", Do: func(context.Context) (bool, error) { return true, nil }, Undo: func(ctx context.Context) error {
			undoDeadline, _ = ctx.Deadline()
			return nil
		}},
		{Name: "b", Do: func(context.Context) (bool, error) { return false, fmt.Errorf("no: %w", fleet.ErrInvalid) }},
	}
	dl := time.Now().Add(2 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	r := saga.Runner{UndoBudget: time.Hour, Reserve: time.Second}
	if _, err := r.Run(ctx, saga.Saga{Name: "t", ID: "t/4", Steps: steps}); err == nil {
		t.Fatal("want the terminal failure")
	}
	if undoDeadline.IsZero() || undoDeadline.After(dl.Add(10*time.Millisecond)) {
		t.Errorf("the undo ran until %v, past the caller's deadline %v", undoDeadline, dl)
	}
}

// TestLogsSayTheClassOfAnError: the step log names the failure's class
// (retryable, terminal, superseded), not a retry flag that Lambda's own
// redelivery contradicts.
func TestLogsSayTheClassOfAnError(t *testing.T) {
	for _, tt := range []struct {
		err   error
		class string
	}{
		{fmt.Errorf("x: %w", fleet.ErrThrottled), "retryable"},
		{fmt.Errorf("x: %w", fleet.ErrInvalid), "terminal"},
		{fmt.Errorf("x: %w", saga.ErrSuperseded), "superseded"},
		{fmt.Errorf("x: %w", fleet.ErrBusy), "retryable"},
		{fmt.Errorf("x: %w", fleet.ErrLeaseLost), "retryable"},
	} {
		var buf bytes.Buffer
		r := saga.Runner{Log: obs.NewLogger(&buf, "debug")}
		_, _ = r.Run(context.Background(), saga.Saga{Name: "t", ID: "t/5", Steps: []saga.Step{
			{Name: "a", Do: func(context.Context) (bool, error) { return false, tt.err }},
		}})
		var line struct {
			Class     string `json:"class"`
			Retryable *bool  `json:"retryable"`
		}
		first, _, _ := strings.Cut(buf.String(), "\n")
		if err := json.Unmarshal([]byte(first), &line); err != nil {
			t.Fatalf("%q: %v", first, err)
		}
		if line.Class != tt.class || line.Retryable != nil {
			t.Errorf("%v: class %q retryable %v, want class %q and no retryable field", tt.err, line.Class, line.Retryable, tt.class)
		}
	}
}

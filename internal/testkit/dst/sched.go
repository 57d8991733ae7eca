// Package dst is the deterministic simulation of the whole multi-region
// system: N regions and M devices on a virtual clock, the real jitr,
// replicate, reconcile, ingest and API code on the in-memory fakes, and a
// seeded scheduler that decides every interleaving.
//
// Determinism: every run of the code under test is a task, a goroutine of
// which exactly one runs at a time. Every registry and table call goes
// through a hook that hands control back to the scheduler for the call's
// (virtual) latency, so that any other task, delivery, replication or
// operator action may run in between; the scheduler then picks the next
// event by virtual time and insertion order. All randomness comes from one
// seeded generator, all clocks are the virtual clock, and the fakes run
// without goroutines of their own (memddb's manual replication), so a seed
// replays exactly: the same trace, the same state.
package dst

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"
)

// Epoch is where every simulation's virtual clock starts.
var Epoch = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// event is something the scheduler does at a virtual time.
type event struct {
	at   time.Time
	seq  int64
	what string
	fn   func()
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// task is one run of the code under test (an invocation, an API call).
type task struct {
	name    string
	wake    chan struct{}
	crashed bool
	ended   bool
	err     error
	done    func(err error, crashed bool)
	// calls counts the task's successful calls; it crashes right after call
	// crashAt (0: never).
	calls, crashAt int
}

// sched is the scheduler: a virtual clock, an event queue, and the one task
// that runs at a time.
type sched struct {
	now   time.Time
	rng   *rand.Rand
	q     eventHeap
	seq   int64
	cur   *task
	back  chan struct{} // a task hands control back
	kill  chan struct{} // closed at the end: parked (crashed) tasks exit
	over  bool
	trace []string
	steps int
	// maxSteps bounds a run (a livelock is a failure, not a hang).
	maxSteps int
	// afterStep runs after every event (the simulation observes).
	afterStep func()
	// crashRate is the probability that a task crashes after one of its
	// calls.
	crashRate float64
}

func newSched(seed uint64) *sched {
	return &sched{
		now:      Epoch,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		back:     make(chan struct{}),
		kill:     make(chan struct{}),
		maxSteps: 2_000_000,
	}
}

// errOver is what every call returns once the simulation is over (parked
// tasks unwinding).
var errOver = errors.New("simulation over")

// errLivelock: the run did not settle within maxSteps.
var errLivelock = errors.New("the simulation did not settle")

func (s *sched) log(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%9.3f %s", s.now.Sub(Epoch).Seconds(), fmt.Sprintf(format, args...)))
}

// at schedules fn at virtual time t (never before now).
func (s *sched) at(t time.Time, what string, fn func()) {
	if t.Before(s.now) {
		t = s.now
	}
	s.seq++
	heap.Push(&s.q, &event{at: t, seq: s.seq, what: what, fn: fn})
}

// after schedules fn d from now.
func (s *sched) after(d time.Duration, what string, fn func()) { s.at(s.now.Add(d), what, fn) }

// between returns a uniform duration in [lo, hi].
func (s *sched) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

// chance reports true with probability p.
func (s *sched) chance(p float64) bool { return p > 0 && s.rng.Float64() < p }

// spawn starts fn as a task now; done runs on the scheduler when the task
// ends (crashed: it died after a call, and its error means nothing). A panic
// of the code under test ends the task with an error, as the Lambda runtime
// reports it.
func (s *sched) spawn(name string, fn func(ctx context.Context) error, done func(err error, crashed bool)) {
	t := &task{name: name, wake: make(chan struct{}), done: done}
	if s.crashRate > 0 && s.chance(s.crashRate) {
		t.crashAt = 1 + s.rng.IntN(40)
	}
	s.after(0, "start "+name, func() {
		go func() {
			<-t.wake
			defer func() {
				if t.crashed {
					return
				}
				if p := recover(); p != nil {
					t.err = fmt.Errorf("panic: %v", p)
				}
				t.ended = true
				s.back <- struct{}{}
			}()
			t.err = fn(context.Background())
		}()
		s.resume(t)
	})
}

// resume runs t until it yields, ends or crashes.
func (s *sched) resume(t *task) {
	prev := s.cur
	s.cur = t
	t.wake <- struct{}{}
	<-s.back
	s.cur = prev
	if (!t.crashed && !t.ended) || t.done == nil {
		return
	}
	done := t.done
	t.done = nil
	switch {
	case t.crashed:
		s.log("crashed %s", t.name)
	case t.err != nil:
		s.log("ended %s: %s", t.name, oneLine(t.err))
	default:
		s.log("ended %s", t.name)
	}
	done(t.err, t.crashed)
}

// yield is called by the running task: it lets d of virtual time pass, in
// which anything else may happen, then goes on.
func (s *sched) yield(d time.Duration, what string) {
	t := s.cur
	s.at(s.now.Add(d), what, func() { s.resume(t) })
	s.back <- struct{}{}
	<-t.wake
}

// crash ends the running task where it is: nothing after this point of it
// ever runs (a process killed), and its goroutine waits for the end.
func (s *sched) crash() {
	t := s.cur
	t.crashed = true
	s.back <- struct{}{}
	<-s.kill
	runtime.Goexit()
}

// sleep is a virtual sleep for the running task (the code under test's
// injected Sleep); outside a task it returns at once.
func (s *sched) sleep(ctx context.Context, d time.Duration) error {
	if s.over {
		return errOver
	}
	if s.cur == nil {
		return nil
	}
	s.yield(d, "sleep")
	return ctx.Err()
}

// run processes events until the queue is empty or until is reached (zero:
// no limit).
func (s *sched) run(until time.Time) error {
	for s.q.Len() > 0 {
		next := s.q[0]
		if !until.IsZero() && next.at.After(until) {
			s.now = until
			return nil
		}
		heap.Pop(&s.q)
		if next.at.After(s.now) {
			s.now = next.at
		}
		s.steps++
		if s.steps > s.maxSteps {
			return fmt.Errorf("%w after %d steps (at %s)", errLivelock, s.steps, next.what)
		}
		next.fn()
		if s.afterStep != nil {
			s.afterStep()
		}
	}
	if !until.IsZero() && s.now.Before(until) {
		s.now = until
	}
	return nil
}

// end releases every parked task: their calls fail with errOver.
func (s *sched) end() {
	s.over = true
	close(s.kill)
}

func oneLine(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	return msg
}

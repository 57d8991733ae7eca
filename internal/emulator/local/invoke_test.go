package local

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/fake/journal"
)

// handler records the payloads it is invoked with and answers with do.
type handler struct {
	mu    sync.Mutex
	calls []string
	do    func(ctx context.Context) error
}

func (h *handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	h.mu.Lock()
	h.calls = append(h.calls, string(payload))
	h.mu.Unlock()
	if h.do == nil {
		return nil, nil
	}
	return nil, h.do(ctx)
}

func (h *handler) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

const queueBucket = "invoke/eu-west-1/ingest"

func newInvoker(h *handler, dead *[]DeadLetter) *Invoker {
	var mu sync.Mutex
	return &Invoker{Name: "ingest", Region: "eu-west-1", Fn: h, Attempts: 2, Backoff: time.Millisecond,
		OnDeadLetter: func(d DeadLetter) {
			mu.Lock()
			*dead = append(*dead, d)
			mu.Unlock()
		}}
}

// TestDurableEventQueue: an event handed to InvokeAsync is invoked after a
// restart unless its invocation ended (success or dead letter) before.
func TestDurableEventQueue(t *testing.T) {
	blocked := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	for _, tc := range []struct {
		name string
		// before runs the first process's invoker; the journal is then
		// restored into a second one.
		do        func(ctx context.Context) error
		before    func(t *testing.T, iv *Invoker, h *handler)
		wantAgain bool // the second process invokes the event
		wantDead  int  // dead letters in the first process
	}{
		{
			name: "running when the process dies", do: blocked, wantAgain: true,
			before: func(t *testing.T, iv *Invoker, h *handler) {
				iv.InvokeAsync([]byte("e"))
				waitFor(t, "the invocation", func() bool { return len(h.got()) == 1 })
				// No Close: the process is killed. (The test ends it below.)
			},
		},
		{
			name: "succeeded", wantAgain: false,
			before: func(t *testing.T, iv *Invoker, _ *handler) {
				iv.InvokeAsync([]byte("e"))
				waitFor(t, "the invocation", func() bool { return iv.Pending() == 0 })
				iv.Close(time.Second)
			},
		},
		{
			name: "dead-lettered", do: func(context.Context) error { return errors.New("bad event") }, wantAgain: false, wantDead: 1,
			before: func(t *testing.T, iv *Invoker, _ *handler) {
				iv.InvokeAsync([]byte("e"))
				waitFor(t, "the attempts", func() bool { return iv.Pending() == 0 })
				iv.Close(time.Second)
			},
		},
		{
			name: "interrupted by the shutdown", do: blocked, wantAgain: true,
			before: func(t *testing.T, iv *Invoker, h *handler) {
				iv.InvokeAsync([]byte("e"))
				waitFor(t, "the invocation", func() bool { return len(h.got()) == 1 })
				iv.Close(0)
			},
		},
		{
			name: "handed over during the shutdown", wantAgain: true,
			before: func(t *testing.T, iv *Invoker, _ *handler) {
				iv.Close(0)
				iv.InvokeAsync([]byte("e"))
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := journal.NewMemory()
			var dead []DeadLetter
			h := &handler{do: tc.do}
			iv := newInvoker(h, &dead)
			defer iv.Close(0)
			if n, err := iv.Restore(j, queueBucket); err != nil || n != 0 {
				t.Fatalf("Restore of an empty queue: %d, %v", n, err)
			}
			tc.before(t, iv, h)
			if len(dead) != tc.wantDead {
				t.Errorf("dead letters %+v, want %d", dead, tc.wantDead)
			}

			h2 := &handler{}
			iv2 := newInvoker(h2, &dead)
			defer iv2.Close(time.Second)
			n, err := iv2.Restore(j, queueBucket)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.wantAgain]; n != want {
				t.Fatalf("resumed %d events, want %d", n, want)
			}
			waitFor(t, "the resumed invocation", func() bool { return iv2.Pending() == 0 })
			if got := h2.got(); tc.wantAgain && !slices.Equal(got, []string{"e"}) || !tc.wantAgain && len(got) != 0 {
				t.Errorf("invoked after the restart with %v", got)
			}
			if j.Len(queueBucket) != 0 {
				t.Errorf("%d events left in the queue after they ran", j.Len(queueBucket))
			}
		})
	}
}

func TestEventQueueWithoutJournal(t *testing.T) {
	// Without a durable queue the shutdown sends what it interrupts to the
	// dead-letter list, as before.
	var dead []DeadLetter
	h := &handler{do: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	iv := newInvoker(h, &dead)
	iv.InvokeAsync([]byte("e"))
	waitFor(t, "the invocation", func() bool { return len(h.got()) == 1 })
	iv.Close(0)
	iv.InvokeAsync([]byte("late"))
	if len(dead) != 2 {
		t.Errorf("dead letters %+v, want the interrupted event and the late one", dead)
	}
}

func TestEventQueueRestoreRefuses(t *testing.T) {
	j := journal.NewMemory()
	j.Set(queueBucket, []byte("short"), []byte("e"))
	var dead []DeadLetter
	iv := newInvoker(&handler{}, &dead)
	defer iv.Close(0)
	if _, err := iv.Restore(j, queueBucket); !errors.Is(err, journal.ErrCorrupt) {
		t.Errorf("Restore of a corrupt queue: %v, want ErrCorrupt", err)
	}
	if _, err := iv.Restore(journal.NewMemory(), queueBucket); err != nil {
		t.Fatal(err)
	}
	if _, err := iv.Restore(journal.NewMemory(), queueBucket); err == nil {
		t.Error("a second Restore succeeded")
	}
}

// TestExecutionEnvironments: an invocation runs in an execution environment
// of its function, as in Lambda: concurrent invocations in different ones,
// a later invocation in one that is free again. The SDK retryer (and its
// adaptive rate limiter) is per environment, so one environment's
// throttles do not slow another's calls.
func TestExecutionEnvironments(t *testing.T) {
	var mu sync.Mutex
	seen := map[environment]int{}
	hold := make(chan struct{})
	h := &handler{do: func(ctx context.Context) error {
		env, ok := environmentOf(ctx)
		if !ok {
			return errors.New("no execution environment in ctx")
		}
		mu.Lock()
		seen[env]++
		mu.Unlock()
		<-hold
		return nil
	}}
	var dead []DeadLetter
	iv := newInvoker(h, &dead)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := iv.Invoke(context.Background(), []byte("x"), 1); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "three invocations at once", func() bool { return len(h.got()) == 3 })
	close(hold)
	wg.Wait()
	if len(seen) != 3 {
		t.Fatalf("three concurrent invocations ran in %d environments: %v", len(seen), seen)
	}
	for range 2 {
		if _, err := iv.Invoke(context.Background(), []byte("y"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("sequential invocations made new environments: %v", seen)
	}
	for env := range seen {
		if env.function != "ingest" || env.region != "eu-west-1" || env.n < 1 || env.n > 3 {
			t.Errorf("environment %+v", env)
		}
	}

	r := newRetryingRegistry(nil)
	ctxA := context.WithValue(context.Background(), environmentKey{}, environment{function: "jitr", region: "eu-west-1", n: 1})
	ctxB := context.WithValue(context.Background(), environmentKey{}, environment{function: "jitr", region: "eu-west-1", n: 2})
	if r.retryer(ctxA) != r.retryer(ctxA) {
		t.Error("one environment, two retryers")
	}
	if r.retryer(ctxA) == r.retryer(ctxB) || r.retryer(ctxA) == r.retryer(context.Background()) {
		t.Error("two environments share a retryer")
	}
}

package local

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/emulator/rules"
	"github.com/mriot/mriot/internal/fake/journal"
)

// Function is what lambda.Start runs: the handler's decoding entry point. The
// local stack invokes exactly this with the JSON AWS would deliver.
type Function = lambda.Handler

// DeadLetter is an event whose invocations all failed: what an on-failure
// destination or a DLQ would hold.
type DeadLetter struct {
	Function string
	Region   string
	Payload  []byte
	Err      string
	Attempts int
	At       time.Time
}

// Invoker invokes one function of one region asynchronously, as Lambda does
// for IoT rule and EventBridge targets: bounded retries with backoff, then the
// event goes to the dead-letter list, never dropped.
type Invoker struct {
	Name     string // e.g. "jitr"
	Region   string
	Fn       Function
	Timeout  time.Duration // the function's timeout
	Attempts int           // total attempts (Lambda async: 3)
	Backoff  time.Duration // first retry delay, doubled each time
	// Concurrency caps the invocations running at once, as a function's
	// reserved concurrency does; excess events wait in the queue, as in
	// Lambda's asynchronous event queue (0: unlimited).
	Concurrency int
	Log         *slog.Logger
	Metrics     obs.Metrics
	// OnDeadLetter receives events that exhausted their attempts.
	OnDeadLetter func(DeadLetter)

	wg      sync.WaitGroup
	pending atomic.Int64
	mu      sync.Mutex
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	once    sync.Once
	slots   chan struct{}

	// The durable queue (Restore): where the queued events are journaled,
	// and the key of the last one.
	queue  journal.Journal
	bucket string
	lastID atomic.Uint64
	// gate holds invocations while the region is down (see Pause).
	gate gate
	arn  string // the function's ARN, made once by init

	// The function's execution environments: each runs one invocation at
	// a time, and one that is free is reused (see Invoke).
	envMu sync.Mutex
	free  []int
	made  int
}

// environment names one execution environment of one function of one
// region: what keeps an SDK client's state (the adaptive retryer's
// client-side rate limiter) from one invocation to the next in Lambda.
type environment struct {
	function, region string
	n                int
}

type environmentKey struct{}

// environmentOf returns the execution environment an invocation runs in;
// false outside an invocation (the API, the reconcile loop).
func environmentOf(ctx context.Context) (environment, bool) {
	e, ok := ctx.Value(environmentKey{}).(environment)
	return e, ok
}

// takeEnvironment gives an invocation a free execution environment, or a
// new one when every one is busy, as Lambda scales out.
func (iv *Invoker) takeEnvironment() int {
	iv.envMu.Lock()
	defer iv.envMu.Unlock()
	if n := len(iv.free); n > 0 {
		e := iv.free[n-1]
		iv.free = iv.free[:n-1]
		return e
	}
	iv.made++
	return iv.made
}

func (iv *Invoker) releaseEnvironment(e int) {
	iv.envMu.Lock()
	iv.free = append(iv.free, e)
	iv.envMu.Unlock()
}

func (iv *Invoker) init() {
	iv.once.Do(func() {
		iv.ctx, iv.cancel = context.WithCancel(context.Background())
		if iv.Attempts <= 0 {
			iv.Attempts = 3
		}
		if iv.Backoff <= 0 {
			iv.Backoff = 200 * time.Millisecond
		}
		if iv.Timeout <= 0 {
			iv.Timeout = 30 * time.Second
		}
		if iv.Log == nil {
			iv.Log = obs.Discard()
		}
		if iv.Metrics == nil {
			iv.Metrics = obs.Nop{}
		}
		if iv.Concurrency > 0 {
			iv.slots = make(chan struct{}, iv.Concurrency)
		}
		iv.arn = fmt.Sprintf("arn:aws:lambda:%s:%s:function:mriot-%s", iv.Region, AccountID, iv.Name)
	})
}

// InvokeAsync queues payload for the function. With a durable queue
// (Restore) it returns once the event is journaled, as Lambda accepts an
// asynchronous invocation once its event queue holds the event: an event
// handed over survives a crash and is invoked after the restart.
func (iv *Invoker) InvokeAsync(payload []byte) {
	iv.init()
	iv.mu.Lock()
	var id uint64
	var wait func() error
	if iv.queue != nil {
		id = iv.lastID.Add(1)
		wait = iv.queue.Append(journal.Put(iv.bucket, journal.SeqKey(id), payload))
	}
	if iv.closed {
		iv.mu.Unlock()
		if wait != nil && wait() == nil {
			iv.Log.Info("event queued during shutdown; it runs at the next start", "function", iv.Name, "region", iv.Region)
			return
		}
		iv.deadLetter(payload, fmt.Errorf("stack shutting down"), 0)
		return
	}
	iv.start(id, payload)
	iv.mu.Unlock()
	if wait != nil {
		if err := wait(); err != nil {
			// It runs all the same; only a crash before it ends loses it.
			iv.Log.Error("event not kept in the durable queue", "function", iv.Name, "region", iv.Region, "error", err.Error())
		}
	}
}

// start runs the event of queue key id (0: not journaled). The caller
// holds iv.mu.
func (iv *Invoker) start(id uint64, payload []byte) {
	iv.wg.Add(1)
	iv.pending.Add(1)
	go func() {
		defer iv.wg.Done()
		defer iv.pending.Add(-1)
		iv.run(id, payload)
	}()
}

func (iv *Invoker) run(id uint64, payload []byte) {
	// The event leaves the durable queue when its invocation ends, in
	// success or in the dead-letter list; one the shutdown interrupted
	// stays there for the next start. Nothing waits: a deletion lost in a
	// crash only runs the event once more.
	if iv.attempts(id, payload) && id != 0 {
		_ = iv.queue.Append(journal.Delete(iv.bucket, journal.SeqKey(id)))
	}
}

// attempts invokes the event until it succeeds or its attempts are spent
// (then it goes to the dead-letter list), and reports whether it ended;
// false when the shutdown interrupted it and the durable queue keeps it.
func (iv *Invoker) attempts(id uint64, payload []byte) bool {
	delay := iv.Backoff
	var err error
	for attempt := 1; attempt <= iv.Attempts; attempt++ {
		if attempt > 1 {
			select {
			case <-time.After(delay):
			case <-iv.ctx.Done():
				return iv.interrupted(id, payload, fmt.Errorf("stack shut down before retry: %w", err), attempt-1)
			}
			delay *= 2
		}
		if err := iv.waitUp(); err != nil {
			// Held by an outage when the stack stopped: kept for the next
			// start, as any event the shutdown interrupts.
			return iv.interrupted(id, payload, fmt.Errorf("stack shut down while the region was down: %w", err), attempt-1)
		}
		if iv.slots != nil {
			select {
			case iv.slots <- struct{}{}:
			case <-iv.ctx.Done():
				return iv.interrupted(id, payload, fmt.Errorf("stack shut down while queued: %w", iv.ctx.Err()), attempt-1)
			}
		}
		_, err = iv.Invoke(iv.ctx, payload, attempt)
		if iv.slots != nil {
			<-iv.slots
		}
		if err == nil {
			return true
		}
	}
	if iv.ctx.Err() != nil {
		// The last attempt failed because the shutdown cancelled it.
		return iv.interrupted(id, payload, err, iv.Attempts)
	}
	iv.deadLetter(payload, err, iv.Attempts)
	return true
}

// interrupted is an event the shutdown stopped: kept in the durable queue
// for the next start (false), or without one sent to the dead-letter list
// (true: it ended).
func (iv *Invoker) interrupted(id uint64, payload []byte, err error, attempts int) bool {
	if id == 0 {
		iv.deadLetter(payload, err, attempts)
		return true
	}
	iv.Log.Info("invocation interrupted by the shutdown; the event runs again at the next start",
		"function", iv.Name, "region", iv.Region, "attempts", attempts)
	return false
}

// Restore makes the invoker's event queue durable in bucket of j, and
// invokes the events j holds there: those queued or running when the
// process stopped (invoked at least once, then: the handlers are
// idempotent). Call it once, before the first InvokeAsync. It returns how
// many events it resumed.
func (iv *Invoker) Restore(j journal.Journal, bucket string) (int, error) {
	iv.init()
	type event struct {
		id      uint64
		payload []byte
	}
	var events []event
	err := j.Scan(bucket, func(k, v []byte) error {
		id, err := journal.ParseSeqKey(k)
		if err != nil || id == 0 {
			return fmt.Errorf("queued event key %x: %w", k, journal.ErrCorrupt)
		}
		events = append(events, event{id: id, payload: bytes.Clone(v)})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("restore the event queue of %s in %s: %w", iv.Name, iv.Region, err)
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.queue != nil {
		return 0, fmt.Errorf("restore the event queue of %s in %s: restored already", iv.Name, iv.Region)
	}
	iv.queue, iv.bucket = j, bucket
	for _, e := range events {
		iv.lastID.Store(max(iv.lastID.Load(), e.id))
		if iv.closed {
			continue // kept for the next start
		}
		iv.start(e.id, e.payload)
	}
	return len(events), nil
}

// Invoke runs the function once, synchronously, as the Lambda runtime would:
// a request id, the function's deadline, and the delivery attempt in ctx.
func (iv *Invoker) Invoke(ctx context.Context, payload []byte, attempt int) ([]byte, error) {
	iv.init()
	reqID := rules.NewUUID()
	ctx, cancel := context.WithTimeout(ctx, iv.Timeout)
	defer cancel()
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{
		AwsRequestID:       reqID,
		InvokedFunctionArn: iv.arn,
	})
	ctx = saga.WithAttempt(ctx, attempt)
	env := iv.takeEnvironment()
	defer iv.releaseEnvironment(env)
	ctx = context.WithValue(ctx, environmentKey{}, environment{function: iv.Name, region: iv.Region, n: env})
	start := time.Now()
	out, err := iv.safeInvoke(ctx, payload)
	iv.Metrics.Count("Invocations", 1, obs.D("Function", iv.Name), obs.D("Region", iv.Region))
	if err != nil {
		iv.Metrics.Count("Errors", 1, obs.D("Function", iv.Name), obs.D("Region", iv.Region))
		iv.Log.Warn("invocation failed", "function", iv.Name, "region", iv.Region, "requestId", reqID,
			"attempt", attempt, "durationMs", time.Since(start).Milliseconds(), "error", err.Error())
	}
	return out, err
}

// safeInvoke turns a handler panic into an error, as the Lambda runtime
// reports a crashed invocation as a failure.
func (iv *Invoker) safeInvoke(ctx context.Context, payload []byte) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("function %s panicked: %v", iv.Name, p)
		}
	}()
	return iv.Fn.Invoke(ctx, payload)
}

func (iv *Invoker) deadLetter(payload []byte, err error, attempts int) {
	iv.Metrics.Count("DeadLetters", 1, obs.D("Function", iv.Name), obs.D("Region", iv.Region))
	msg := "<nil>"
	if err != nil {
		msg = err.Error()
	}
	iv.Log.Error("event sent to the dead-letter queue", "function", iv.Name, "region", iv.Region, "attempts", attempts, "error", msg)
	if iv.OnDeadLetter != nil {
		iv.OnDeadLetter(DeadLetter{Function: iv.Name, Region: iv.Region, Payload: payload, Err: msg, Attempts: attempts, At: time.Now()})
	}
}

// Close waits for queued invocations, cancelling retries after grace.
func (iv *Invoker) Close(grace time.Duration) {
	iv.init()
	iv.mu.Lock()
	iv.closed = true
	iv.mu.Unlock()
	if iv.Paused() {
		grace = 0 // what waits for the region to come back cannot finish
	}
	done := make(chan struct{})
	go func() { iv.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		iv.cancel()
		<-done
	}
	iv.cancel()
}

// Pending is the number of events queued or running, not counting those
// held while the region is down (Held).
func (iv *Invoker) Pending() int64 { return iv.pending.Load() - iv.gate.held.Load() }

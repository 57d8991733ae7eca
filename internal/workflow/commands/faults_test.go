package commands_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
)

// calls counts every call of a delivery (table calls and the publish),
// fails call failAt retryably, and ends the run (as a crash does: nothing
// after it runs) right after call crashAt.
type calls struct {
	n, failAt, crashAt int
	ops                []string
}

func (c *calls) before(table string) func(context.Context, string) error {
	return func(_ context.Context, op string) error {
		c.n++
		c.ops = append(c.ops, table+":"+op)
		if c.n == c.failAt {
			return fmt.Errorf("%s (injected): %w", op, fleet.ErrUnavailable)
		}
		return nil
	}
}

func (c *calls) after(context.Context, string) {
	if c.n == c.crashAt {
		runtime.Goexit()
	}
}

type countingPublisher struct {
	*publisher
	c *calls
}

func (p countingPublisher) Publish(ctx context.Context, topic string, payload []byte, qos int) error {
	if err := p.c.before("iotdata")(ctx, "Publish"); err != nil {
		return err
	}
	if err := p.publisher.Publish(ctx, topic, payload, qos); err != nil {
		return err
	}
	p.c.after(ctx, "Publish")
	return nil
}

// TestDeliveryFaultMatrix: for every call of a delivery to a connected
// device, (a) a retryable failure of that call, then the record's retry,
// publishes exactly once; (b) a crash right after that call, then the
// retry, publishes at most once to the connection: exactly once when the
// crash came before the claim or after the publish, never when it came
// between them (the connection's claim is taken: the next connection gets
// the command).
func TestDeliveryFaultMatrix(t *testing.T) {
	run := func(t *testing.T, c *calls) (w *world, claimAt, publishAt, first int) {
		t.Helper()
		w = newWorld(t, "eu-west-1")
		w.device(t, "dev", fleet.StatusActive)
		w.connect(t, "dev", true, "eu-west-1", "s1")
		_, rec := w.command(t, "dev", time.Hour)
		for name, tb := range map[string]*memddb.Table{"commands": w.store.Table(), "presence": w.presence, "inventory": w.inv.Table()} {
			tb.SetHook(c.before(name))
			tb.SetAfter(c.after)
		}
		h := w.handlerWith(t, countingPublisher{w.pub, c})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = h.HandleStream(context.Background(), events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{rec}})
		}()
		<-done
		first = len(c.ops)
		for i, op := range c.ops {
			switch {
			case op == "commands:PutItem" && claimAt == 0:
				claimAt = i + 1
			case op == "iotdata:Publish":
				publishAt = i + 1
			}
		}
		// The retry of the record, without faults.
		c.failAt, c.crashAt = 0, 0
		_ = h.HandleStream(context.Background(), events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{rec}})
		return w, claimAt, publishAt, first
	}
	clean := &calls{}
	_, claimAt, publishAt, total := run(t, clean)
	if claimAt == 0 || publishAt <= claimAt || total <= publishAt {
		t.Fatalf("clean run: calls %v: no claim before the publish", clean.ops)
	}
	for k := 1; k <= total; k++ {
		t.Run(fmt.Sprintf("fail call %d", k), func(t *testing.T) {
			w, _, _, _ := run(t, &calls{failAt: k})
			if n := len(w.pub.topics); n != 1 {
				t.Fatalf("call %d (%s) failed, then the retry: published %d times, want 1", k, clean.ops[k-1], n)
			}
		})
		t.Run(fmt.Sprintf("crash after call %d", k), func(t *testing.T) {
			w, _, _, _ := run(t, &calls{crashAt: k})
			want := 1
			if k >= claimAt && k < publishAt {
				want = 0 // claimed, never published: this connection does not get it
			}
			if n := len(w.pub.topics); n != want {
				t.Fatalf("crash after call %d (%s), then the retry: published %d times, want %d", k, clean.ops[k-1], n, want)
			}
		})
	}
}

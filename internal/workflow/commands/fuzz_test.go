package commands_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-lambda-go/events"
)

// FuzzInvoke: whatever bytes arrive (a rule's output, a stream batch), the
// function neither panics nor asks for a retry of something malformed:
// with healthy tables an error or a failed record is never the answer.
func FuzzInvoke(f *testing.F) {
	for _, name := range []string{"commands-stream-insert.json", "commands-presence-connected.json", "commands-ack.json"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "events", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"Records":[{"eventName":"INSERT","dynamodb":{"NewImage":{"Kind":{"S":"command"}}}}]}`))
	f.Add([]byte(`{"Records":[{"dynamodb":{"NewImage":{"Connected":{"BOOL":true},"ThingName":{"S":"a#b"}}}}]}`))
	f.Add([]byte(`{"Records":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w := newWorld(t, "eu-west-1")
		w.device(t, "test_001", "ACTIVE")
		out, err := w.h.Invoke(context.Background(), b)
		if err != nil {
			t.Fatalf("Invoke(%q) = %v: a retry of what will not change", b, err)
		}
		if len(out) > 0 {
			var resp events.DynamoDBEventResponse
			if err := json.Unmarshal(out, &resp); err != nil || len(resp.BatchItemFailures) > 0 {
				t.Fatalf("Invoke(%q) answered %s", b, out)
			}
		}
	})
}

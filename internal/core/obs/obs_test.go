package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

func TestEMFLine(t *testing.T) {
	var buf bytes.Buffer
	e := NewEMF(&buf, "")
	e.now = func() time.Time { return time.UnixMilli(1700000000000) }
	e.Count("StepOutcome", 1, D("Saga", "jitr"), D("Step", "create-thing"), D("Outcome", "done"))
	var doc struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Saga, Step, Outcome string
		StepOutcome         float64
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %s", buf.String())
	}
	d := doc.AWS.CloudWatchMetrics[0]
	if doc.AWS.Timestamp != 1700000000000 || d.Namespace != Namespace || len(d.Dimensions[0]) != 3 ||
		d.Metrics[0].Name != "StepOutcome" || d.Metrics[0].Unit != "Count" || doc.StepOutcome != 1 || doc.Saga != "jitr" {
		t.Errorf("EMF document %s", buf.String())
	}
	if bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
		t.Error("one metric must be one line")
	}
}

func TestLoggerAddsRequestID(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "info")
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	log.InfoContext(ctx, "hello", "k", "v")
	log.DebugContext(ctx, "hidden")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if m["requestId"] != "req-1" || m["msg"] != "hello" || m["k"] != "v" {
		t.Errorf("log line %s", buf.String())
	}
}

func TestRecorderKeys(t *testing.T) {
	r := NewRecorder()
	r.Count("Rejected", 1, D("Reason", "x"), D("Function", "ingest"))
	r.Count("Rejected", 2, D("Function", "ingest"), D("Reason", "x"))
	if got := r.Get("Rejected", D("Function", "ingest"), D("Reason", "x")); got != 3 {
		t.Errorf("count %v, want 3 regardless of dimension order", got)
	}
	if _, ok := r.Snapshot()["Rejected{Function=ingest,Reason=x}"]; !ok {
		t.Errorf("snapshot keys %v", r.Snapshot())
	}
}

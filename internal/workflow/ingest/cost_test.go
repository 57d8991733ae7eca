package ingest

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/fake/memddb"
)

// Per message at INFO, what ingest writes to CloudWatch Logs is billed
// (ingestion per GB) like the compute it logs: at most one compact log line
// and one EMF line per stored message.
const (
	maxLogLinesPerMessage = 1
	maxLogBytesPerMessage = 300
	maxEMFLinesPerMessage = 1
)

// TestOutputPerMessage stores fresh messages through a handler that logs
// and counts as in Lambda (JSON at INFO with the request id, EMF lines per
// invocation) and
// measures what each costs in log lines and bytes. A duplicate is rare and
// may say more.
func TestOutputPerMessage(t *testing.T) {
	var logs, emf bytes.Buffer
	g := memddb.NewGlobalTable("data", memddb.DataKey, []string{region})
	defer g.Close()
	// Counted and flushed per invocation, as functions/ingest does
	// (wiring.Metrics and wiring.Flushed).
	metrics := obs.NewBatch(obs.NewEMF(&emf, obs.Namespace))
	h, err := New(Config{Telemetry: memddb.NewTelemetry(g.Replica(region)), Region: region,
		Log: obs.NewLogger(&logs, "info"), Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{
			AwsRequestID: fmt.Sprintf("0b6a1b2c-3d4e-4f50-8a6b-%012d", i)})
		payload := event(fmt.Sprintf("sensor-%04d", i%50), `{"temp":21.5,"hum":40}`, 1767225600000+int64(i),
			fmt.Sprintf("6c1f1d4e-8e5b-4f4a-9a53-%012d", i))
		if _, err := h.Invoke(ctx, payload); err != nil {
			t.Fatal(err)
		}
		metrics.Flush()
	}
	logLines := bytes.Count(logs.Bytes(), []byte("\n"))
	emfLines := bytes.Count(emf.Bytes(), []byte("\n"))
	t.Logf("per message: %.2f log lines, %.0f log bytes, %.2f EMF lines, %.0f EMF bytes",
		float64(logLines)/n, float64(logs.Len())/n, float64(emfLines)/n, float64(emf.Len())/n)
	if logLines > maxLogLinesPerMessage*n {
		t.Errorf("%d log lines for %d messages, want at most %d each", logLines, n, maxLogLinesPerMessage)
	}
	if logs.Len() > maxLogBytesPerMessage*n {
		t.Errorf("%d log bytes for %d messages, want at most %d each", logs.Len(), n, maxLogBytesPerMessage)
	}
	if emfLines > maxEMFLinesPerMessage*n {
		t.Errorf("%d EMF lines for %d messages, want at most %d each", emfLines, n, maxEMFLinesPerMessage)
	}
}

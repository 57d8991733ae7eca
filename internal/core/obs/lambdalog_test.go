package obs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

// lambdaLevels are Lambda's application log levels, least severe first.
var lambdaLevels = []string{"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}

func lambdaRank(level string) int {
	for i, l := range lambdaLevels {
		if strings.EqualFold(l, level) {
			return i
		}
	}
	return -1
}

// lambdaKeeps says whether Lambda's application log-level filter at level
// keeps line, as the AWS Lambda Developer Guide ("Log-level filtering")
// documents it for runtimes without built-in support (provided.al2023): a
// JSON object's level is its "level" value; an invalid or missing "level",
// or a missing or invalid RFC 3339 "timestamp", makes it INFO. A line that
// is not a JSON object has no level either: INFO too.
func lambdaKeeps(line []byte, level string) bool {
	lineLevel := "INFO"
	var m map[string]any
	if json.Unmarshal(line, &m) == nil {
		l, _ := m["level"].(string)
		ts, _ := m["timestamp"].(string)
		if _, err := time.Parse(time.RFC3339, ts); err == nil && lambdaRank(l) >= 0 {
			lineLevel = l
		}
	}
	return lambdaRank(lineLevel) >= lambdaRank(level)
}

func emfLine(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	NewEMF(&buf, "").Count("CompensationFailed", 1, D("Saga", "jitr"))
	return bytes.TrimSpace(buf.Bytes())
}

// TestLambdaFilterModel: the model drops an EMF line (no "level") at WARN
// and ERROR, which is why LambdaLogLevel is not the operator's LogLevel.
func TestLambdaFilterModel(t *testing.T) {
	emf := emfLine(t)
	for level, want := range map[string]bool{"TRACE": true, "DEBUG": true, "INFO": true, "WARN": false, "ERROR": false} {
		if got := lambdaKeeps(emf, level); got != want {
			t.Errorf("Lambda at %s keeps an EMF line: %v, want %v", level, got, want)
		}
	}
	const ts = `"timestamp":"2026-01-02T03:04:05.123Z"`
	for _, c := range []struct {
		line, level string
		want        bool
	}{
		{`{"level":"ERROR",` + ts + `}`, "ERROR", true},
		{`{"level":"WARN",` + ts + `}`, "ERROR", false},
		{`{"level":"debug",` + ts + `}`, "INFO", false},
		{`{"level":"ERROR"}`, "WARN", false}, // no timestamp: INFO
		{`{"level":"ERROR","time":"2026-01-02T03:04:05Z"}`, "WARN", false},
		{`plain text`, "INFO", true},
		{`plain text`, "WARN", false},
	} {
		if got := lambdaKeeps([]byte(c.line), c.level); got != c.want {
			t.Errorf("Lambda at %s keeps %s: %v, want %v", c.level, c.line, got, c.want)
		}
	}
}

// TestEMFPassesLambdaFilter: at the level the template gives Lambda, every
// EMF line reaches CloudWatch.
func TestEMFPassesLambdaFilter(t *testing.T) {
	if !lambdaKeeps(emfLine(t), LambdaLogLevel) {
		t.Fatalf("Lambda's filter at LambdaLogLevel %s drops the EMF lines: every custom metric and its alarms go silent", LambdaLogLevel)
	}
}

// lambdaChildEnv marks the child process of TestLoggerFromEnvInLambda.
const lambdaChildEnv = "OBS_TEST_LAMBDA_CHILD"

// TestLoggerFromEnvInLambda runs LoggerFromEnv in a process with the
// environment Lambda gives a function of the template (lambdacontext reads
// it once, at init), for every LogLevel the template allows, and passes what
// the process writes through Lambda's filter: the EMF line and the
// application's lines at LOG_LEVEL and above reach CloudWatch, with the
// request id; the lines below LOG_LEVEL are not written.
func TestLoggerFromEnvInLambda(t *testing.T) {
	if os.Getenv(lambdaChildEnv) != "" {
		ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
		log := LoggerFromEnv()
		log.DebugContext(ctx, "at DEBUG")
		log.InfoContext(ctx, "at INFO")
		log.WarnContext(ctx, "at WARN")
		log.ErrorContext(ctx, "at ERROR")
		NewEMF(os.Stdout, "").Count("CompensationFailed", 1, D("Saga", "jitr"))
		return
	}
	for _, logLevel := range []string{"DEBUG", "INFO", "WARN", "ERROR"} {
		t.Run(logLevel, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestLoggerFromEnvInLambda$", "-test.count=1")
			cmd.Env = append(os.Environ(), lambdaChildEnv+"=1",
				"AWS_LAMBDA_LOG_FORMAT=JSON", "AWS_LAMBDA_LOG_LEVEL="+LambdaLogLevel, "LOG_LEVEL="+logLevel)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var kept []string
			emf := false
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				line := sc.Bytes()
				if !bytes.HasPrefix(line, []byte("{")) {
					continue // the test binary's own output (PASS)
				}
				if !lambdaKeeps(line, LambdaLogLevel) {
					continue
				}
				var m map[string]any
				if err := json.Unmarshal(line, &m); err != nil {
					t.Fatalf("line %s: %v", line, err)
				}
				if m["_aws"] != nil {
					emf = true
					continue
				}
				if m["requestId"] != "req-1" {
					t.Errorf("line without the request id: %s", line)
				}
				msg, _ := m["message"].(string)
				kept = append(kept, msg)
			}
			var want []string
			for _, l := range []string{"DEBUG", "INFO", "WARN", "ERROR"} {
				if lambdaRank(l) >= lambdaRank(logLevel) {
					want = append(want, "at "+l)
				}
			}
			if strings.Join(kept, ",") != strings.Join(want, ",") {
				t.Errorf("LOG_LEVEL=%s: CloudWatch gets %q, want %q\n%s", logLevel, kept, want, out)
			}
			if !emf {
				t.Errorf("LOG_LEVEL=%s: the EMF line does not reach CloudWatch\n%s", logLevel, out)
			}
		})
	}
}

// Package obs is the observability plumbing shared by every function: JSON
// logs with the Lambda request id, CloudWatch embedded-metric-format (EMF)
// metrics, and X-Ray subsegments.
package obs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

// LambdaLogLevel is the application log level every function gives Lambda's
// log filter (template.yaml, LoggingConfig.ApplicationLogLevel), whatever
// the LogLevel parameter says. Lambda gives a JSON line without a valid
// "level" the level INFO (AWS Lambda Developer Guide, "Log-level
// filtering"); the EMF lines have none, so a filter at WARN or ERROR would
// drop every metric. At DEBUG, the most detailed level lambdacontext knows
// (it reads TRACE as INFO), Lambda drops nothing the functions write, and
// the functions filter their own logs by LOG_LEVEL (LoggerFromEnv).
const LambdaLogLevel = "DEBUG"

// ParseLevel reads a log level (debug, info, warn or warning, error; any
// case); anything else is info.
func ParseLevel(level string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// NewLogger returns a JSON slog logger writing to w at level (ParseLevel)
// that adds the Lambda request id to every record logged with a Lambda
// context: the local stack's and the tests' logger.
func NewLogger(w io.Writer, level string) *slog.Logger {
	return slog.New(requestIDHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: ParseLevel(level)})})
}

// LoggerFromEnv is the functions' logger, on stdout at $LOG_LEVEL.
//
// In Lambda (AWS_LAMBDA_LOG_FORMAT set, as Lambda does when the function has
// a LoggingConfig) it is lambdacontext's handler: the format Lambda was
// given, "timestamp" and "message" keys, the request id. That handler also
// filters at AWS_LAMBDA_LOG_LEVEL, which Lambda sets from the template's
// ApplicationLogLevel (LambdaLogLevel, so that EMF lines pass); LOG_LEVEL
// raises it to the level the operator chose. Elsewhere (the RIE, tools) it
// is NewLogger: JSON, whatever the environment says of Lambda's format.
func LoggerFromEnv() *slog.Logger {
	level := os.Getenv("LOG_LEVEL")
	if os.Getenv("AWS_LAMBDA_LOG_FORMAT") == "" {
		return NewLogger(os.Stdout, level)
	}
	return slog.New(minLevel{lambdacontext.NewLogHandler(), ParseLevel(level)})
}

// minLevel drops the records below min that its handler would write.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

// requestIDHandler adds the request id of a Lambda context (NewLogger's
// handler; in Lambda, lambdacontext's does it).
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		r.AddAttrs(slog.String("requestId", lc.AwsRequestID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// Discard is a logger that drops everything, for tests and benchmarks.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

package local

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// keysOf decodes one JSON log line into its keys in order, repeats kept.
func keysOf(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	var keys []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestDedupKeys(t *testing.T) {
	cases := []struct {
		name string
		log  func(l *slog.Logger)
		want string // keys after time, level, msg
	}{
		{"logger and record", func(l *slog.Logger) { l.With("region", "eu-west-1").Info("m", "region", "eu-west-1", "v", 1) }, "region v"},
		{"two Withs", func(l *slog.Logger) {
			l.With("region", "a").With("function", "jitr", "region", "a").Info("m", "function", "jitr")
		}, "region function"},
		{"record repeats itself", func(l *slog.Logger) { l.Info("m", "k", 1, "k", 2) }, "k"},
		{"groups are not top level", func(l *slog.Logger) { l.With("region", "a").WithGroup("g").Info("m", "region", "b") }, "region g"},
		{"distinct keys kept", func(l *slog.Logger) { l.With("a", 1).Info("m", "b", 2, "c", 3) }, "a b c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tc.log(slog.New(dedupKeys(slog.NewJSONHandler(&buf, nil))))
			keys := keysOf(t, buf.String())
			if got := strings.Join(keys[3:], " "); got != tc.want {
				t.Fatalf("keys %q, want %q: %s", got, tc.want, buf.String())
			}
		})
	}
}

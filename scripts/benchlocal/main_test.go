package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"testing"

	"github.com/mriot/mriot/internal/testkit/tier"
)

// TestPrintsRatios runs the benchmark on the smallest scale (2 devices × 5
// messages, one round) and checks that it prints its ratio lines.
func TestPrintsRatios(t *testing.T) {
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"-devices", "2", "-messages", "5", "-rounds", "1"}, &out, &errs)
	if errors.Is(err, ErrNoMosquitto) {
		tier.Require(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	for _, want := range []string{
		`(?m)^mosquitto [0-9]+ msg/s over 10 messages$`,
		`(?m)^ratio memory [0-9.]+ × mosquitto acked \([0-9]+ msg/s\), [0-9.]+ × stored \([0-9]+ msg/s\)$`,
		`(?m)^ratio state-file [0-9.]+ × mosquitto acked`,
		`(?m)^\s+1\s+10\s+[0-9]+\s+[0-9.]+\s+[0-9]+\s+[0-9.]+\s+[0-9]+\s+[0-9.]+\s+[0-9.]+`,
		`(?m)^cpu memory [0-9.]+ µs/msg`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Log(out.String())
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-rounds", "0"}, {"-devices", "0"}, {"-messages", "0"}, {"-modes", "disk"}, {"-endpoint", "nearest"}, {"-bogus"}} {
		var out, errs bytes.Buffer
		if err := run(context.Background(), args, &out, &errs); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"testing"

	"github.com/mriot/mriot/internal/testkit/rie"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// TestPrintsRatios runs the benchmark on the smallest scale: one round of
// one function and the peers, and checks that it prints its ratio lines.
func TestPrintsRatios(t *testing.T) {
	if testing.Short() {
		t.Skip("builds five bootstraps")
	}
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"-rounds", "1", "-fn", "ingest"}, &out, &errs)
	if errors.Is(err, rie.ErrNotInstalled) {
		tier.Require(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	for _, want := range []string{
		`(?m)^ratio X-Ray SDK: init [0-9.]+ ×, size [0-9.]+ ×`,
		`(?m)^ratio ingest init [0-9.]+ × hello\+sdk, [0-9.]+ × hello; size [0-9.]+ × hello\+sdk$`,
		`(?m)^\s+hello\s+[0-9.]+\s+[0-9.]+`,
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
	for _, args := range [][]string{{"-rounds", "0"}, {"-fn", "nosuch"}, {"-bogus"}} {
		var out, errs bytes.Buffer
		if err := run(context.Background(), args, &out, &errs); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

package xraytrace

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-xray-sdk-go/xray"
)

func TestNoSegmentTracesNothing(t *testing.T) {
	ctx := context.Background()
	got, end := Tracer{}.Start(ctx, "step")
	if got != ctx {
		t.Error("a context without a segment was changed")
	}
	end(errors.New("x")) // must not panic
}

func TestSubsegmentUnderASegment(t *testing.T) {
	ctx, seg := xray.BeginSegment(context.Background(), "jitr")
	defer seg.Close(nil)
	sctx, end := Tracer{}.Start(ctx, "jitr/create-thing")
	sub := xray.GetSegment(sctx)
	if sub == nil || sub == seg || sub.Name != "jitr/create-thing" || sub.ParentSegment != seg {
		t.Fatalf("subsegment %+v", sub)
	}
	end(errors.New("throttled"))
	if !sub.Fault && !sub.Error {
		t.Error("the step's error was not recorded on the subsegment")
	}
}

package obs

import (
	"context"

	"github.com/aws/aws-xray-sdk-go/xray"
)

// Tracer opens a span around a unit of work.
type Tracer interface {
	// Start opens a span named name and returns the context that carries it and
	// a function that ends it with the work's error (nil for success).
	Start(ctx context.Context, name string) (context.Context, func(error))
}

// NopTracer traces nothing.
type NopTracer struct{}

// Start implements Tracer.
func (NopTracer) Start(ctx context.Context, _ string) (context.Context, func(error)) {
	return ctx, func(error) {}
}

// XRay opens X-Ray subsegments. Outside a traced Lambda invocation (no segment
// in the context) it traces nothing rather than logging X-Ray's complaint.
type XRay struct{}

var _ Tracer = XRay{}

// Start implements Tracer.
func (XRay) Start(ctx context.Context, name string) (context.Context, func(error)) {
	if xray.GetSegment(ctx) == nil {
		return ctx, func(error) {}
	}
	ctx, seg := xray.BeginSubsegment(ctx, name)
	return ctx, func(err error) { seg.Close(err) }
}

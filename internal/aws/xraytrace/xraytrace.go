// Package xraytrace is the X-Ray implementation of obs.Tracer. It lives apart
// from obs so that what does not trace (the local stack, the CLI) does not
// link the X-Ray SDK.
package xraytrace

import (
	"context"

	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/mriot/mriot/internal/core/obs"
)

// Tracer opens X-Ray subsegments. Outside a traced Lambda invocation (no segment
// in the context) it traces nothing rather than logging X-Ray's complaint.
type Tracer struct{}

var _ obs.Tracer = Tracer{}

// Start implements Tracer.
func (Tracer) Start(ctx context.Context, name string) (context.Context, func(error)) {
	if xray.GetSegment(ctx) == nil {
		return ctx, func(error) {}
	}
	ctx, seg := xray.BeginSubsegment(ctx, name)
	return ctx, func(err error) { seg.Close(err) }
}

package obs

import "context"

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

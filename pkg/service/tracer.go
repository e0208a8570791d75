package service

import (
	"context"

	"github.com/jackc/pgx/v5"
)

type queryTracerKey struct{}

// WithQueryTracer returns ctx carrying tracer: Open, and the Run functions
// given that context, set it on every data-plane pool they open (the bench
// times the services' SQL with it). Without it no tracer is set.
func WithQueryTracer(ctx context.Context, tracer pgx.QueryTracer) context.Context {
	return context.WithValue(ctx, queryTracerKey{}, tracer)
}

// queryTracer is the tracer ctx carries, or nil.
func queryTracer(ctx context.Context) pgx.QueryTracer {
	tracer, _ := ctx.Value(queryTracerKey{}).(pgx.QueryTracer)
	return tracer
}

package server

import (
	"context"
	"fmt"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/grpcws/grpcws/internal/config"
)

// tracing is OpenTelemetry tracing, when the configuration turns it on:
// each backend stream gets a client span whose parent is the trace context
// of the upgrade request, and the backend gets the span's traceparent.
// Without it, traceparent and tracestate are passed to the backend as they
// came.
type tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
}

// newTracing sets tracing up from t; it returns nil when tracing is off.
// provider, if not nil, replaces the OTLP exporter.
func newTracing(t config.Tracing, provider trace.TracerProvider) (*tracing, error) {
	if !t.Enabled {
		return nil, nil
	}
	tr := &tracing{provider: provider, propagator: propagation.TraceContext{}, shutdown: func(context.Context) error { return nil }}
	if provider != nil {
		return tr, nil
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(t.OTLPEndpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing.otlp_endpoint: %w", err)
	}
	name := t.ServiceName
	if name == "" {
		name = "grpcws"
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", name))),
	)
	tr.provider, tr.shutdown = tp, tp.Shutdown
	return tr, nil
}

// dialOptions instruments a backend connection.
func (t *tracing) dialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(t.propagator),
	))}
}

// extract puts the trace context of an upgrade request into its context.
func (t *tracing) extract(r *http.Request) *http.Request {
	if t == nil {
		return r
	}
	return r.WithContext(t.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
}

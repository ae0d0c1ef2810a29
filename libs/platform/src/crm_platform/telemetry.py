"""OpenTelemetry tracing: provider set-up and W3C context carried in gRPC metadata and NATS headers."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_configured = False


def configure_tracing(service: str, otlp_endpoint: str = "") -> TracerProvider | None:
    """Install a tracer provider for ``service``; spans go to the OTLP collector when one is configured."""
    global _configured
    if _configured:
        return None
    resource = Resource.create({"service.name": f"crm-{service}"})
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The sampler follows the standard OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parent-based,
        # always on), so a busy deployment can sample a ratio without a code change.
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    else:
        # Nowhere to send spans: record none (a recorded span costs attributes, events and a processor hand-off
        # on every request for nothing). Spans still get real trace and span ids, so logs carry a trace id and
        # the W3C context still travels through gRPC and NATS to parts that do export.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context into ``carrier`` (headers or metadata) and return it."""
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """Read a trace context from ``carrier``; an empty context when there is none."""
    return propagate.extract(dict(carrier or {}))


def current_traceparent() -> tuple[str, str]:
    """The current W3C traceparent and tracestate, empty strings when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")

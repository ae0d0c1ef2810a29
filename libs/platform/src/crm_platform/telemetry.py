"""OpenTelemetry tracing: provider set-up and W3C context carried in gRPC metadata and NATS headers."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def configure_tracing(service: str, otlp_endpoint: str = "") -> TracerProvider | None:
    """Install a tracer provider for ``service``; spans go to the OTLP collector when one is configured."""
    global _configured
    if _configured:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"crm-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
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

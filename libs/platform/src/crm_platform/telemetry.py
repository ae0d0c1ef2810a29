"""OpenTelemetry tracing: provider set-up and W3C context carried in gRPC metadata and NATS headers."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_configured = False
# False once configure_tracing installed a provider that records no span (nowhere to send them).
_recording = True


def configure_tracing(service: str, otlp_endpoint: str = "") -> TracerProvider | None:
    """Install a tracer provider for ``service``; spans go to the OTLP collector when one is configured."""
    global _configured, _recording
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
        _recording = False
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


# The W3C trace-context header, as opentelemetry's TraceContextTextMapPropagator accepts it.
_TRACEPARENT = re.compile(r"^\s*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\s*$")
_NO_CONTEXT = otel_context.Context()


def _default_propagation() -> bool:
    # The fast paths below are what the default propagators (W3C trace context, then baggage) do when the
    # carrier holds only a traceparent and the context no baggage; any other configuration takes the full path.
    configured = os.environ.get("OTEL_PROPAGATORS", "tracecontext,baggage")
    return {p.strip() for p in configured.split(",") if p.strip()} <= {"tracecontext", "baggage"}


_FAST = _default_propagation()


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context into ``carrier`` (headers or metadata) and return it."""
    if _FAST and not baggage.get_all():
        # Every outgoing call does this: the composite propagator's generic machinery costs several times
        # formatting the header directly.
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            carrier["traceparent"] = (
                f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"
            )
            tracestate = span_context.trace_state.to_header()
            if tracestate:
                carrier["tracestate"] = tracestate
        return carrier
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """Read a trace context from ``carrier``; an empty context when there is none."""
    if not carrier:
        return _NO_CONTEXT
    if _FAST and len(carrier) == 1 and "traceparent" in carrier:
        match = _TRACEPARENT.match(carrier["traceparent"])
        if match is not None and match.group(1) == "00" and not match.group(5):
            trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
            if trace_id and span_id:
                span_context = trace.SpanContext(
                    trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(int(match.group(4), 16))
                )
                return trace.set_span_in_context(trace.NonRecordingSpan(span_context), _NO_CONTEXT)
    return propagate.extract(dict(carrier))


def current_traceparent() -> tuple[str, str]:
    """The current W3C traceparent and tracestate, empty strings when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")


class _Current:
    """Makes a context current for a ``with`` block; yields its span (a lighter ``use_span``)."""

    __slots__ = ("_context", "_span", "_token")

    def __init__(self, span: trace.Span, context: otel_context.Context) -> None:
        self._span = span
        self._context = context

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(self._context)
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)


def request_span(
    tracer: trace.Tracer, name: str, carrier: Mapping[str, str] | None, kind: trace.SpanKind, attributes: Any
) -> Any:
    """The span a request (an HTTP request, an RPC) is handled in, as a context manager yielding it.

    Where spans are recorded: a new span ``name`` under the caller's trace context from ``carrier``. Where
    none is (:func:`configure_tracing` without a collector), a span would only carry new ids nobody records,
    at a few microseconds per request: the caller's context is made current as it is, and without one a new
    non-recording root (random trace and span ids, not sampled), so logs still carry a trace id and calls made
    meanwhile still pass it on.
    """
    parent = extract(carrier)
    if _recording:
        return tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)
    span = trace.get_current_span(parent)
    if not span.get_span_context().is_valid:
        span = trace.NonRecordingSpan(
            trace.SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1, is_remote=False)
        )
        parent = trace.set_span_in_context(span, _NO_CONTEXT)
    return _Current(span, parent)

"""The fast W3C trace-context paths give what opentelemetry's own propagators give."""

from __future__ import annotations

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crm_platform import telemetry

_HEADERS = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02",
    " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id: invalid
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id: invalid
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case: invalid
    "garbage",
    "",
]


@pytest.mark.parametrize("header", _HEADERS)
def test_extract_matches_the_propagator(header: str) -> None:
    fast = trace.get_current_span(telemetry.extract({"traceparent": header})).get_span_context()
    slow = trace.get_current_span(propagate.extract({"traceparent": header})).get_span_context()
    assert (fast.trace_id, fast.span_id, fast.trace_flags, fast.is_remote, fast.is_valid) == (
        slow.trace_id,
        slow.span_id,
        slow.trace_flags,
        slow.is_remote,
        slow.is_valid,
    )


def test_inject_matches_the_propagator() -> None:
    empty: dict[str, str] = {}
    propagate.inject(empty)
    assert telemetry.inject({}) == empty == {}  # no span: nothing to write
    for header in _HEADERS[:3]:
        context = propagate.extract({"traceparent": header, "tracestate": "vendor=abc"})
        span = trace.get_current_span(context)
        with trace.use_span(span):
            expected: dict[str, str] = {}
            propagate.inject(expected)
            assert telemetry.inject({}) == expected
            assert telemetry.current_traceparent() == (expected["traceparent"], expected["tracestate"])


def _local_tracer() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_request_span_records_a_child_of_the_caller_where_spans_are_recorded() -> None:
    tracer, exporter = _local_tracer()
    with telemetry.request_span(tracer, "GET /x", {"traceparent": _PARENT}, trace.SpanKind.SERVER, {"a": "b"}) as span:
        assert trace.get_current_span() is span and span.is_recording()
    (recorded,) = exporter.get_finished_spans()
    assert recorded.name == "GET /x" and recorded.kind is trace.SpanKind.SERVER
    assert recorded.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert recorded.parent is not None and recorded.parent.span_id == 0xB7AD6B7169203331
    assert dict(recorded.attributes or {}) == {"a": "b"}


def test_request_span_without_recording_continues_the_caller_or_starts_a_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "_recording", False)
    tracer, exporter = _local_tracer()
    with telemetry.request_span(tracer, "rpc", {"traceparent": _PARENT}, trace.SpanKind.SERVER, {}) as span:
        context = trace.get_current_span().get_span_context()
        assert trace.get_current_span() is span and not span.is_recording()
        assert (context.trace_id, context.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
        assert telemetry.inject({})["traceparent"] == _PARENT  # calls made meanwhile pass the caller's trace on
    assert not trace.get_current_span().get_span_context().is_valid  # the previous context is back

    trace_ids = set()
    for _ in range(2):
        with telemetry.request_span(tracer, "GET /y", None, trace.SpanKind.SERVER, {}) as span:
            context = span.get_span_context()
            assert context.is_valid and not context.trace_flags.sampled and not span.is_recording()
            assert trace.get_current_span() is span  # logs carry its trace id
            assert telemetry.inject({})["traceparent"].split("-")[1] == f"{context.trace_id:032x}"
            trace_ids.add(context.trace_id)
    assert len(trace_ids) == 2  # a new trace for each request without a caller
    assert exporter.get_finished_spans() == ()  # nothing was recorded

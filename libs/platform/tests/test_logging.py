"""JSON-lines logging: one object per line with the fixed fields, the extras, and the current span's trace id."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from crm_platform.logging import JsonFormatter


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("crm.test").makeRecord("crm.test", logging.WARNING, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_carries_the_trace_id_of_the_span_it_was_logged_in() -> None:
    formatter = JsonFormatter("gateway")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        inside = json.loads(formatter.format(_record("slow request", route="/api/v1/x", status=200)))
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x") and inside["span_id"] == format(
        context.span_id, "016x"
    )
    assert (inside["service"], inside["level"], inside["logger"], inside["msg"]) == (
        "gateway",
        "warning",
        "crm.test",
        "slow request",
    )
    assert (inside["route"], inside["status"]) == ("/api/v1/x", 200) and inside["ts"].endswith("Z")
    outside = json.loads(formatter.format(_record("no request")))
    assert "trace_id" not in outside and "\n" not in formatter.format(_record("two\nlines"))

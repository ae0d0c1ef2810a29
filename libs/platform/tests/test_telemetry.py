"""The fast W3C trace-context paths give what opentelemetry's own propagators give."""

from __future__ import annotations

import pytest
from opentelemetry import propagate, trace

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

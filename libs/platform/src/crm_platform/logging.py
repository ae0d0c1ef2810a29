"""JSON-lines logging carrying the current trace and span ids, with personal data and secrets left out.

Every line passes :mod:`crm_platform.redaction`: extras named like personal data or secrets are masked, driver
errors (in the message's arguments, in extras, anywhere in a logged exception's chain) are reduced to their type,
SQLSTATE, constraint and table, and text built from one is cut before its statement, parameters and DETAIL line.
The formatter does it, not each call site, so a service written later cannot forget it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from crm_platform.redaction import REDACTED, describe_error, format_exception, is_sensitive, redact, scrub_text

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line with ts, level, logger, msg, trace_id and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": safe_message(record),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = REDACTED if is_sensitive(key) else redact(value)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = format_exception(record.exc_info[1])
        return json.dumps(entry, default=str, ensure_ascii=False)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging.Formatter's name
        """A traceback without any driver error's statement, parameters or DETAIL line."""
        return format_exception(ei[1]) if ei and ei[1] is not None else ""


def safe_message(record: logging.LogRecord) -> str:
    """``record``'s message formatted with its arguments made safe first (exceptions described by
    :func:`~crm_platform.redaction.describe_error`, dicts redacted), then cut by
    :func:`~crm_platform.redaction.scrub_text`."""
    if isinstance(record.msg, BaseException):
        return describe_error(record.msg)
    message = str(record.msg)
    args = record.args
    if args:
        safe: Any
        if isinstance(args, Mapping):
            safe = {
                k: REDACTED if isinstance(k, str) and is_sensitive(k) else _safe_argument(v) for k, v in args.items()
            }
        else:
            safe = tuple(_safe_argument(a) for a in args)
        try:
            message = message % safe
        except (TypeError, ValueError, KeyError):
            message = f"{message} (arguments did not fit the message)"
    return scrub_text(message)


def _safe_argument(value: Any) -> Any:
    # Strings and numbers are kept as they are (a %d needs a number); the whole message is scrubbed afterwards.
    if isinstance(value, BaseException | Mapping | list | tuple | set | frozenset):
        return redact(value)
    return value


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party loggers that are chatty at INFO; aiosqlite's DEBUG lines also quote every statement's
    # parameters (personal values), so it stays at WARNING even when the service logs at DEBUG.
    for noisy in ("nats", "alembic.runtime.migration", "uvicorn.access", "asyncio", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

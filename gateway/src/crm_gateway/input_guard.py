"""The edge check of hostile input (issue 29): one guard, run on every route after the permission guard and before
a handler decodes anything, so every route — present and future — refuses the same things the same way.

It checks what the handlers' own types cannot: every path parameter and query value is a single line of text
(no NUL or other control character, :func:`crm_platform.validation.text_problem`), the query string is UTF-8 and
repeats no parameter more than :data:`~crm_platform.validation.MAX_REPEATED` times; and the JSON body of a route
that takes one (a ``data`` parameter) is UTF-8, nests at most :data:`~crm_platform.validation.MAX_JSON_DEPTH`
levels, holds no control character in any string or key and no number beyond an int64 or a float. Each refusal
is a 422 problem naming the field (never echoing the value: it may be personal data). The services check every
string of every call again (:func:`crm_platform.validation.message_violations` in the gRPC interceptor), so this
is the first of two layers.

It runs after the permission guard on purpose: a refused state-changing request is audited with its caller.
Bodies the route does not decode (an import's file, streamed through) are not read here.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any
from urllib.parse import unquote_plus

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from crm_gateway.policy import is_automatic_options
from crm_platform.validation import MAX_JSON_DEPTH, MAX_REPEATED, Violations, json_violations

MAX_QUERY_PARAMETERS = 100
"""The most query parameters one request may carry (every route takes far fewer)."""


async def input_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Raise :class:`~crm_platform.errors.InvalidArgument` naming each field of the request that no route accepts."""
    if is_automatic_options(handler):
        return
    violations = Violations()
    for name, value in connection.path_params.items():
        if isinstance(value, str):
            violations.check_text(name, value)
    query: bytes = connection.scope.get("query_string", b"")
    if query:
        _check_query(query, violations)
    if _takes_body(handler):
        _check_body(await connection.body(), violations)  # type: ignore[attr-defined]
    violations.raise_if_any()


def _takes_body(handler: BaseRouteHandler) -> bool:
    """Whether Litestar decodes a JSON body for ``handler`` (it declares ``data``); a cached property underneath."""
    return "data" in handler.parsed_fn_signature.parameters


def _check_query(raw: bytes, violations: Violations) -> None:
    """Every parameter name and value a single line of UTF-8 text; no name repeated beyond the cap."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        violations.add("query", "must be UTF-8, percent-encoded")
        return
    parts = [part for part in text.split("&") if part]
    if len(parts) > MAX_QUERY_PARAMETERS:
        violations.add("query", f"must carry at most {MAX_QUERY_PARAMETERS} parameters")
        return
    counts: Counter[str] = Counter()
    for part in parts:
        raw_name, _, raw_value = part.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
            value = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            violations.add(_printable(raw_name), "must be UTF-8, percent-encoded")
            continue
        if not violations.check_text(_printable(name), name):
            continue
        violations.check_text(name, value)
        counts[name] += 1
    for name, count in counts.items():
        if count > MAX_REPEATED:
            violations.add(name, f"may be given at most {MAX_REPEATED} times")


def _printable(name: str) -> str:
    """A parameter name fit to appear in a problem's field list (a hostile one may hold anything)."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean[:64] or "query"


def _check_body(body: bytes, violations: Violations) -> None:
    """A JSON body: UTF-8, bounded nesting, text strings and keys, numbers an int64 or a finite float."""
    if not body:
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        violations.add("body", "must be JSON encoded as UTF-8")
        return
    # Fast path, the usual request (a Chinese name included): a body without escapes or raw DEL/C1 characters holds
    # no control character (raw C0 ones are no JSON at all, lone surrogates need an escape), one with this few
    # brackets cannot nest too deep, and no number in it can overflow — nothing to walk.
    few_brackets = body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
    if few_brackets and b"\\" not in body and not _RAW_CONTROL.search(text) and not _huge_number(body):
        return
    try:
        document = msgspec.json.decode(body)
    except RecursionError:
        violations.add("body", f"nests deeper than {MAX_JSON_DEPTH} levels")
        return
    except msgspec.DecodeError:
        return  # not JSON at all: the route's own decoding answers 400 saying where
    violations.items.extend(json_violations(document))


# Control characters valid in JSON unescaped (DEL and the C1 range), which the walk would refuse.
_RAW_CONTROL = re.compile("[\x7f-\x9f]")
# A number that may not fit an int64 (19 digits or more) or a float (an exponent of three digits or more), found
# with every digit made a 0 first: a run of 19 is then a substring test, and the exponent's pattern starts with a
# literal (the regular expression \d{19}|\d[eE][+-]?\d{3} over the raw body cost 21 µs of a create's 24).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
_LONG_EXPONENT = re.compile(rb"0[eE][+-]?000")


def _huge_number(body: bytes) -> bool:
    """Whether ``body`` may hold a number past an int64 or a float (then the document is walked)."""
    digits = body.translate(_DIGITS_AS_ZERO)
    return _LONG_DIGITS in digits or _LONG_EXPONENT.search(digits) is not None

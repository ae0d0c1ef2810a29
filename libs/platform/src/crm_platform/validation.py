"""Collect field violations and raise them together, so a caller learns every bad field at once; and the checks
every edge applies to hostile input before anything else sees it (issue 29).

One layer, used twice: the gateway checks every decoded string of a body, query and path (and the JSON's
nesting) before a route handler runs, and every service's gRPC interceptor checks every string of every request
message (:func:`message_violations`), so a direct gRPC call is refused too. Both answer ``INVALID_ARGUMENT``
naming the field; neither echoes the value (it may be personal data). The rules:

- no text holds NUL, another C0 control character, DEL, a C1 control or a lone surrogate: PostgreSQL refuses NUL
  (a refused write used to become a 5xx), terminals and spreadsheets act on the others, and a lone surrogate
  cannot be encoded as UTF-8 at all;
- tab, line feed and carriage return only in free text (notes, summaries, descriptions): the generic layers
  cannot tell free text from a name, so they allow these three, and the domain's :meth:`Violations.require_text`
  (single-line unless ``multiline=True``) refuses them in names, tags and codes;
- JSON nests at most :data:`MAX_JSON_DEPTH` levels, a query parameter repeats at most :data:`MAX_REPEATED`
  times, timestamps stay inside what a protobuf Timestamp holds, versions and cursors inside an int64.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from crm_platform.errors import FieldViolation, InvalidArgument

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a JSON body may have; no resource of ours needs more than a few."""
MAX_REPEATED = 20
"""How often one query parameter (a ``tag`` filter) may repeat: each repetition is another join or predicate."""
INT64_MAX = 2**63 - 1
"""The largest version or numeric cursor: what the databases and protobuf int64 fields hold."""

# Forbidden in every text; tab, LF and CR are allowed here (free text may hold them).
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Forbidden in a single-line text (a name, tag, code, id, query or path parameter): every control character.
_CONTROL_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A protobuf Timestamp (and so every service) holds 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_FIRST_INSTANT = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_LAST_INSTANT = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)


def visible(text: str) -> str:
    """``text`` fit to be stored or shown where a hostile value must be kept as it came (the audit trail): each
    control character :func:`text_problem` refuses written as ``\\xNN`` (``/customers/%00`` is kept as
    ``/customers/\\x00``) and each lone surrogate as ``?``; nothing else changes, nothing is dropped."""
    return _CONTROL_IN_LINE.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    return "?" if "\ud800" <= char <= "\udfff" else f"\\x{ord(char):02x}"


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` is no acceptable text (a control character or lone surrogate, named by code point), or None.
    ``multiline`` allows tab, line feed and carriage return (free text)."""
    found = (_CONTROL_IN_TEXT if multiline else _CONTROL_IN_LINE).search(value)
    if found is None:
        return None
    char = found.group()
    if "\ud800" <= char <= "\udfff":
        return "must be valid Unicode text (holds a lone surrogate)"
    return f"must not contain control characters (holds U+{ord(char):04X})"


def json_violations(value: Any, *, max_depth: int = MAX_JSON_DEPTH, root: str = "") -> list[FieldViolation]:
    """The violations in a decoded JSON document: every string value is text (tab and newlines allowed), every
    object key a single line, every number an int64 or a finite float, and nothing nests deeper than
    ``max_depth``. Fields are named by path (``holdings[0].product_code``); walked without recursion, so a deep
    document cannot exhaust the stack."""
    found: list[FieldViolation] = []
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item, multiline=True)
            if problem:
                found.append(FieldViolation(path or "body", problem))
            continue
        if isinstance(item, bool) or not isinstance(item, dict | list | int | float):
            continue
        if isinstance(item, int):
            if not -INT64_MAX - 1 <= item <= INT64_MAX:  # a protobuf field would refuse it with no field named
                found.append(FieldViolation(path or "body", "must be a number within a 64-bit integer's range"))
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                found.append(FieldViolation(path or "body", "must be a finite number"))
            continue
        if depth >= max_depth:  # named by its top-level field: the full path would be as deep as the nesting
            top = path.split(".", 1)[0].split("[", 1)[0]
            found.append(FieldViolation(top or "body", f"nests deeper than {max_depth} levels"))
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                key_text = str(key)
                child_path = f"{path}.{key_text}" if path else key_text
                problem = text_problem(key_text)
                if problem:
                    found.append(FieldViolation(path or "body", f"has a key that {problem}"))
                    continue
                stack.append((child, child_path, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    found.reverse()  # the stack visits the document backwards; report in reading order
    return found


def message_violations(message: Message, *, root: str = "") -> list[FieldViolation]:
    """The violations in a protobuf message: every string field (nested, repeated and map ones too) is text,
    tab and newlines allowed. Fields are named by path (``filter.tags[1]``), as the gateway names them."""
    found: list[FieldViolation] = []
    stack: list[tuple[Message, str]] = [(message, root)]
    while stack:
        current, prefix = stack.pop()
        for field, value in current.ListFields():
            path = f"{prefix}.{field.name}" if prefix else field.name
            kind = field.type
            if kind == FieldDescriptor.TYPE_STRING:
                values = enumerate(value) if field.is_repeated else ((None, value),)
                for index, text in values:
                    problem = text_problem(text, multiline=True)
                    if problem:
                        found.append(FieldViolation(path if index is None else f"{path}[{index}]", problem))
            elif kind == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    _map_violations(field, value, path, found, stack)
                elif field.is_repeated:
                    stack.extend((child, f"{path}[{i}]") for i, child in enumerate(value))
                else:
                    stack.append((value, path))
    return found


def _map_violations(
    field: FieldDescriptor, value: Any, path: str, found: list[FieldViolation], stack: list[tuple[Message, str]]
) -> None:
    assert field.message_type is not None  # a map field's entry type
    value_field = field.message_type.fields_by_name["value"]
    for key, item in value.items():
        key_path = f"{path}[{key}]"
        if isinstance(key, str):
            problem = text_problem(key)
            if problem:
                found.append(FieldViolation(path, f"has a key that {problem}"))
                continue
        if value_field.type == FieldDescriptor.TYPE_STRING:
            problem = text_problem(item, multiline=True)
            if problem:
                found.append(FieldViolation(key_path, problem))
        elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
            stack.append((item, key_path))


def require_valid_message(message: Message) -> None:
    """Raise :class:`InvalidArgument` naming every field of ``message`` holding a control character."""
    found = message_violations(message)
    if found:
        raise InvalidArgument(found)


class Violations:
    """A list of field violations raised as one :class:`InvalidArgument` by :meth:`raise_if_any`."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that ``field`` is invalid because of ``description``."""
        self.items.append(FieldViolation(field, description))

    def require_text(
        self, field: str, value: str, *, max_length: int, min_length: int = 1, multiline: bool = False
    ) -> str:
        """Check a trimmed text's length and characters (a single line unless ``multiline``: see
        :func:`text_problem`); return the trimmed value."""
        trimmed = value.strip()
        problem = text_problem(trimmed, multiline=multiline)
        if problem:
            self.add(field, problem)
        elif len(trimmed) < min_length:
            self.add(field, "is required" if min_length == 1 else f"must be at least {min_length} characters")
        elif len(trimmed) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        return trimmed

    def check_text(self, field: str, value: str, *, multiline: bool = False) -> bool:
        """Record a violation when ``value`` holds a control character (:func:`text_problem`); True when clean."""
        problem = text_problem(value, multiline=multiline)
        if problem:
            self.add(field, problem)
        return problem is None

    def timestamp(self, field: str, value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
        """``value`` as a protobuf Timestamp, or None (recording why) when it carries no time zone or lies
        outside years 1 to 9999 in UTC (``0001-01-01T00:00:00+01:00`` is in year 0 there)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            self.add(field, "must carry a time zone, e.g. 2026-01-01T00:00:00Z")
            return None
        try:
            utc = value.astimezone(dt.UTC)
        except (OverflowError, ValueError):
            utc = None
        if utc is None or not _FIRST_INSTANT <= utc <= _LAST_INSTANT:
            self.add(field, "must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
            return None
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(utc)
        return stamp

    def bounded_int(self, field: str, text: str, *, low: int = 0, high: int = INT64_MAX) -> int | None:
        """``text`` as a decimal integer in ``low``..``high`` (an int64 by default), or None (recording why). The
        length is checked first, so a thousand digits are not converted at all."""
        digits = text.strip()
        if not digits or len(digits) > 19 or not digits.isascii() or not digits.lstrip("-").isdigit():
            self.add(field, f"must be a whole number from {low} to {high}")
            return None
        number = int(digits)
        if not low <= number <= high:
            self.add(field, f"must be a whole number from {low} to {high}")
            return None
        return number

    def raise_if_any(self) -> None:
        """Raise :class:`InvalidArgument` with every recorded violation, if there is one."""
        if self.items:
            raise InvalidArgument(self.items)


@contextmanager
def collect() -> Iterator[Violations]:
    """``with collect() as v: v.add(...)`` raises at the end of the block when anything was added."""
    violations = Violations()
    yield violations
    violations.raise_if_any()

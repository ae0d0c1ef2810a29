"""Input validation (issue 29): what the shared checks cost per request, against what the request costs anyway.

Every gRPC request is walked by the shared interceptor (``crm_platform.validation.message_violations``: every
string field, nested and repeated ones too), and every JSON body by the gateway's input guard (a fast path of
byte scans; the walk ``json_violations`` when the body holds escapes, DEL/C1 characters, many brackets or long
numbers). Timed here on the largest create the API takes — an individual customer with every profile field
filled in Chinese text and ten interests — and on a one-field read, each against the bare cost the same request
pays in any case: parsing its protobuf (``FromString``) or decoding its JSON (``msgspec.json.decode``). Best of
:data:`RUNS` loops of :data:`CALLS` calls each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.common import Row, Section, progress

CALLS = 20_000
RUNS = 3
TARGET_US = 20.0  # per request, the largest create: under a tenth of the ~0.36 ms a read costs the service


def _profile() -> dict[str, Any]:
    return {
        "gender": "male",
        "birth_date": "1985-06-06",
        "id_type": "resident_id",
        "id_number": "110105198506060012",
        "mobile": "13912345678",
        "email": "li.ming@example.cn",
        "address": "北京市朝阳区建国路八十八号院三号楼十二层一二〇三室",
        "occupation": "高级工程师",
        "employer": "北京某某科技有限公司",
        "annual_income": {"amount": "680000.00", "currency": "CNY"},
        "family_situation": "已婚，育有一子一女，\n父母同住",
        "risk_appetite": "balanced",
        "risk_assessed_on": "2026-03-01",
        "risk_expires_on": "2027-03-01",
        "investment_experience": "基金定投五年，股票三年，理财产品若干",
        "interests": ["理财", "旅游", "高尔夫", "摄影", "收藏", "健身", "阅读", "茶艺", "书法", "亲子"],
    }


def _best_us(loop: Callable[[], None]) -> float:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        loop()
        runs.append((time.perf_counter() - started) / CALLS * 1e6)
    return min(runs)


def _timed(function: Callable[[Any], Any], argument: Any) -> float:
    def loop() -> None:
        for _ in range(CALLS):
            function(argument)

    loop()  # warm-up
    return _best_us(loop)


def measure() -> dict[str, Any]:
    """µs per call of each check and of its bare counterpart, for the create and the read."""
    import msgspec
    from google.protobuf import json_format

    from crm.customer.v1 import customer_service_pb2 as pb
    from crm_gateway.input_guard import _check_body
    from crm_platform.validation import Violations, json_violations, message_violations

    body = {"kind": "individual", "name": "李明", **_profile()}
    create = pb.CreateCustomerRequest(kind=1, name="李明", request_id="7f1c2b3a-idempotency")
    proto_profile = {k: v for k, v in _profile().items() if k not in ("gender", "id_type", "risk_appetite")}
    proto_profile["annual_income"] = {"units": 680000, "currency_code": "CNY"}
    json_format.ParseDict(proto_profile, create.profile, ignore_unknown_fields=True)
    read = pb.GetCustomerRequest(customer_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    create_wire, read_wire = create.SerializeToString(), read.SerializeToString()
    # As a browser sends it: raw UTF-8, one line per text (the guard's fast path); then with the free text's line
    # break and the Chinese as JSON escapes (a backslash in the body: the guard walks the decoded document).
    one_line = {**body, "family_situation": body["family_situation"].replace("\n", "")}
    create_json = json.dumps(one_line, ensure_ascii=False).encode()
    escaped_json = json.dumps(body).encode()

    figures: dict[str, Any] = {
        "create_fields": len(create.ListFields()) + len(create.profile.ListFields()),
        "create_wire_bytes": len(create_wire),
        "create_json_bytes": len(create_json),
    }
    figures["grpc_create_us"] = _timed(message_violations, create)
    figures["grpc_create_bare_us"] = _timed(pb.CreateCustomerRequest.FromString, create_wire)
    figures["grpc_read_us"] = _timed(message_violations, read)
    figures["grpc_read_bare_us"] = _timed(pb.GetCustomerRequest.FromString, read_wire)
    figures["json_fast_us"] = _timed(lambda raw: _check_body(raw, Violations()), create_json)
    figures["json_walk_us"] = _timed(lambda raw: _check_body(raw, Violations()), escaped_json)
    figures["json_walk_only_us"] = _timed(json_violations, msgspec.json.decode(create_json))
    figures["json_bare_us"] = _timed(msgspec.json.decode, create_json)
    progress(
        f"  gRPC create walk {figures['grpc_create_us']:.2f} µs (parse {figures['grpc_create_bare_us']:.2f}), "
        f"JSON guard fast {figures['json_fast_us']:.2f} µs, walk {figures['json_walk_us']:.2f} µs"
    )
    return figures


def section(figures: dict[str, Any]) -> Section:
    """One row per check, against the parse the request pays anyway."""

    def row(label: str, ours: float, bare: float, bare_label: str, target: bool = True) -> Row:
        return Row(
            "Input validation",
            label,
            ours,
            "µs",
            bare_label=bare_label,
            bare_value=bare,
            ratio=ours / bare if bare else float("nan"),
            target=f"≤ {TARGET_US:.0f} µs per request" if target else "",
            met=ours <= TARGET_US if target else None,
        )

    f = figures
    rows = [
        row(
            "gRPC interceptor, largest create (every string field)",
            f["grpc_create_us"],
            f["grpc_create_bare_us"],
            "protobuf parse of the same request",
        ),
        row(
            "gRPC interceptor, read by id",
            f["grpc_read_us"],
            f["grpc_read_bare_us"],
            "protobuf parse of the same request",
            target=False,
        ),
        row(
            "gateway input guard, largest create body (fast path)",
            f["json_fast_us"],
            f["json_bare_us"],
            "JSON decode of the same body",
        ),
        row(
            "gateway input guard, same body with \\u escapes (full walk)",
            f["json_walk_us"],
            f["json_bare_us"],
            "JSON decode of the same body",
        ),
    ]
    detail = [
        f"Input validation (`crm_platform.validation`, `crm_gateway.input_guard`): the create holds "
        f"{f['create_fields']} set fields ({f['create_wire_bytes']} bytes of protobuf, {f['create_json_bytes']} of "
        f"JSON with ten interests and Chinese text); best of {RUNS} loops of {CALLS:,} calls. The walk of the "
        f"decoded document alone (`json_violations`) took {f['json_walk_only_us']:.2f} µs; the guard's walk also "
        "decodes the body a second time (the route's own decoding is the first)."
    ]
    return Section("Input validation", rows, detail)

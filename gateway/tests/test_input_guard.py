"""The gateway's edge check of hostile input (crm_gateway.input_guard, issue 29): every route refuses control
characters, broken encodings, deep nesting, too many repeated filters and out-of-range values with a 422 problem
naming the field — before any service is called — and answers well-formed requests as before."""

from __future__ import annotations

import httpx

from gateway_harness import Gateway


def _fields(reply: httpx.Response) -> set[str]:
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    return {e["field"] for e in reply.json().get("errors", [])}


async def test_control_characters_are_refused_naming_the_field(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    body = {"kind": "individual", "name": "李\u0000明", "occupation": "clerk\u001b[31m"}
    reply = await gateway.client.post("/api/v1/customers", json=body, headers=rm1)
    assert _fields(reply) == {"name", "occupation"}
    assert "李" not in reply.text  # the value is never echoed: it may be personal data
    assert _fields(await gateway.client.get("/api/v1/customers", params={"name": "a\x00"}, headers=rm1)) == {"name"}
    assert _fields(await gateway.client.get("/api/v1/customers/x%00", headers=rm1)) == {"customer_id"}
    login = await gateway.client.post("/api/v1/auth/login", json={"username": "rm1\u0000", "password": "x"})
    assert _fields(login) == {"username"}


async def test_broken_bodies_are_refused_not_failed(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    json_type = {**rm1, "Content-Type": "application/json"}
    gbk = '{"kind": "individual", "name": "中文"}'.encode("gbk")
    for content in (gbk, b'{"name": "\xc0\xaf"}', b"[" * 100_000 + b"]" * 100_000):
        reply = await gateway.client.post("/api/v1/customers", content=content, headers=json_type)
        assert _fields(reply) == {"body"}
    nested = b'{"a":' * 40 + b"1" + b"}" * 40  # too deep: named by its top-level field
    assert _fields(await gateway.client.post("/api/v1/customers", content=nested, headers=json_type)) == {"a"}
    huge = b'{"kind": "individual", "name": "x", "age": 1000000000000000000000000000000}'
    assert _fields(await gateway.client.post("/api/v1/customers", content=huge, headers=json_type)) == {"age"}


async def test_ranges_of_dates_versions_cursors_and_repeats(gateway: Gateway) -> None:
    rm1, auditor = await gateway.bearer("rm1"), await gateway.bearer("auditor")
    for edge in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00"):
        reply = await gateway.client.get("/api/v1/customers", params={"created_from": edge}, headers=rm1)
        assert _fields(reply) == {"created_from"}
    tags = [("tag", f"t{i}") for i in range(21)]
    assert _fields(await gateway.client.get("/api/v1/customers", params=tags, headers=rm1)) == {"tag"}
    assert (await gateway.client.get("/api/v1/customers", params=tags[:20], headers=rm1)).status_code == 200
    assert _fields(await gateway.client.get("/api/v1/audit", params={"cursor": "garbage"}, headers=auditor)) == {
        "cursor"
    }
    assert _fields(await gateway.client.get("/api/v1/segments", params={"cursor": "garbage"}, headers=rm1)) == {
        "page.page_token"
    }
    created = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": "甲"}, headers=rm1)
    assert created.status_code == 201, created.text
    patch = await gateway.client.patch(
        f"/api/v1/customers/{created.json()['id']}",
        json={"note": "x"},
        headers={**rm1, "If-Match": '"' + "9" * 30 + '"'},
    )
    assert patch.status_code == 412, patch.text


async def test_free_text_keeps_its_line_breaks(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    created = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": "乙"}, headers=rm1)
    assert created.status_code == 201, created.text
    reply = await gateway.client.patch(
        f"/api/v1/customers/{created.json()['id']}",
        json={"occupation": "clerk", "note": "第一行\n第二行\tend"},
        headers={**rm1, "If-Match": created.headers["etag"]},
    )
    assert reply.status_code == 200, reply.text


def test_the_fast_path_sends_every_possibly_huge_number_to_the_walk() -> None:
    """A body skips the walk only when no number in it can pass an int64 or a float: 19 digits in a row, or an
    exponent of three digits, send it to the walk; shorter ones, digits apart, and Chinese text do not."""
    from crm_gateway.input_guard import _huge_number

    walked = [b"1234567890123456789", b'{"v": 1e308}', b'{"v": 1.5E-400}', b'{"v": 2e+100}', "号1e999".encode()]
    skipped = [b"123456789012345678", b'{"v": 1e30, "w": 12e99}', b"1234 5678 9012 3456 7890", "李明".encode(), b""]
    assert all(_huge_number(body) for body in walked)
    assert not any(_huge_number(body) for body in skipped)

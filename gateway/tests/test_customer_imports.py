"""Batch import through the gateway: template, a streamed upload distributed round robin, progress and report
(JSON and CSV), a refused file as a 422 problem, re-upload, rollback, and who sees the job."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from crm_platform.identifiers import resident_id_check_char
from gateway_harness import Gateway

ID_NUMBERS = [
    b + resident_id_check_char(b)
    for b in ("11010519900101123", "11010519850606001", "11010519720315001", "11010519610910002")
]


def _file(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["kind", "name", "id_type", "id_number", "mobile"], lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def _rows() -> list[dict[str, str]]:
    rows = [
        {"kind": "individual", "name": f"导入{i}", "id_type": "resident_id", "id_number": n, "mobile": f"1390000000{i}"}
        for i, n in enumerate(ID_NUMBERS)
    ]
    rows.append({"kind": "individual", "name": "坏", "id_type": "resident_id", "id_number": "1", "mobile": ""})
    return rows


async def _streamed(content: bytes, piece: int = 50) -> AsyncIterator[bytes]:
    for start in range(0, len(content), piece):
        yield content[start : start + piece]


async def _finished(gateway: Gateway, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(400):
        reply = await gateway.client.get(f"/api/v1/customers/imports/{job_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        if reply.json()["job"]["status"] == "finished":
            return dict(reply.json())
        await asyncio.sleep(0.05)
    raise AssertionError("import did not finish")


async def test_import_through_the_gateway(gateway: Gateway) -> None:
    head = await gateway.bearer("head")
    template = await gateway.client.get("/api/v1/customers/import-template?format=csv", headers=head)
    assert template.status_code == 200 and template.headers["content-type"].startswith("text/csv")
    assert template.content.decode("utf-8-sig").startswith("kind,name,gender,birth_date,id_type,id_number,mobile")
    xlsx = await gateway.client.get("/api/v1/customers/import-template", params={"format": "xlsx"}, headers=head)
    assert xlsx.status_code == 200 and xlsx.content.startswith(b"PK")

    content = _file(_rows())
    upload = await gateway.client.post(
        "/api/v1/customers/imports?distribute=round_robin&team_id=T1&file_name=branch.csv",
        content=_streamed(content),  # chunked: the gateway forwards it as it arrives
        headers={**head, "Content-Type": "text/csv"},
    )
    assert upload.status_code == 201, upload.text
    job = upload.json()
    assert job["status"] == "queued" and job["total"] == 5 and job["file_name"] == "branch.csv"
    assert upload.headers["location"] == f"/api/v1/customers/imports/{job['id']}"

    done = await _finished(gateway, head, job["id"])
    assert (done["job"]["imported"], done["job"]["failed"], done["job"]["duplicates"]) == (4, 1, 0)
    # T1's RMs and tellers in turn (username order), not its lead.
    assert [r["owner_id"] for r in done["rows"][:4]] == ["u-rm1", "u-rm2", "u-teller1", "u-rm1"]
    failed = done["rows"][4]
    assert failed["status"] == "failed" and failed["row"] == 6 and failed["errors"][0]["field"] == "id_number"
    page = await gateway.client.get(
        f"/api/v1/customers/imports/{job['id']}", params={"status": "failed", "limit": 1}, headers=head
    )
    assert [r["row"] for r in page.json()["rows"]] == [6]

    report = await gateway.client.get(f"/api/v1/customers/imports/{job['id']}/report.csv", headers=head)
    assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert lines[0][:4] == ["row", "status", "customer_id", "owner_id"]
    assert [line[1] for line in lines[1:]] == ["imported"] * 4 + ["failed"]
    assert lines[5][4] == "id_number"

    # The imported customers are their new owners'; rm1 sees its own.
    rm1 = await gateway.bearer("rm1")
    mine = await gateway.client.get(f"/api/v1/customers/{done['rows'][0]['customer_id']}", headers=rm1)
    assert mine.status_code == 200 and mine.json()["id_number"] == "110105********" + ID_NUMBERS[0][-4:]

    # Who sees the job: its creator and wider scopes over it; not an RM, who is not the creator.
    rm2 = await gateway.bearer("rm2")
    assert (await gateway.client.get(f"/api/v1/customers/imports/{job['id']}", headers=rm2)).status_code == 404

    # The same file again imports nothing twice.
    again = await gateway.client.post(
        "/api/v1/customers/imports?distribute=round_robin&team_id=T1",
        content=content,
        headers={**head, "Content-Type": "text/csv"},
    )
    assert again.status_code == 200 and again.json()["reused"] and again.json()["id"] == job["id"]

    rolled = await gateway.client.post(
        f"/api/v1/customers/imports/{job['id']}/rollback", json={"reason": "wrong branch file"}, headers=head
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["job"]["status"] == "rolled_back" and rolled.json()["job"]["rolled_back"] == 4
    assert (
        await gateway.client.get(f"/api/v1/customers/{done['rows'][0]['customer_id']}", headers=rm1)
    ).status_code == 404


async def test_refused_uploads_are_problems_naming_why(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    csv_type = {**rm1, "Content-Type": "text/csv"}
    bad_header = await gateway.client.post(
        "/api/v1/customers/imports", content=b"kind,nom\r\nindividual,x\r\n", headers=csv_type
    )
    assert bad_header.status_code == 422
    problem = bad_header.json()
    assert bad_header.headers["content-type"].startswith("application/problem+json")
    assert problem["reason"] == "IMPORT_FILE_REJECTED" and problem["errors"][0]["field"] == "file"
    assert "unknown column(s) nom" in problem["errors"][0]["message"] and "name" in problem["errors"][0]["message"]

    # A large file (3.7 MB), streamed: the service refuses it by its header while the rest still streams in, and
    # the gateway answers with the same problem.
    async def large_bad_file() -> AsyncIterator[bytes]:
        yield b"kind,nom\r\n"
        for _ in range(64):
            yield b"individual,x\r\n" * 4096

    streamed = await gateway.client.post("/api/v1/customers/imports", content=large_bad_file(), headers=csv_type)
    assert streamed.status_code == 422 and "unknown column(s) nom" in streamed.json()["detail"]

    bad_encoding = await gateway.client.post(
        "/api/v1/customers/imports", content=b"kind,name\r\nindividual,\xff\xfe\xfa\r\n", headers=csv_type
    )
    assert bad_encoding.status_code == 422 and "bad encoding" in bad_encoding.json()["detail"]

    broken = await gateway.client.post(
        "/api/v1/customers/imports?format=xlsx", content=b"PK\x03\x04broken", headers=csv_type
    )
    assert broken.status_code == 422 and "broken spreadsheet" in broken.json()["detail"]

    unknown_type = await gateway.client.post(
        "/api/v1/customers/imports", content=b"x", headers={**rm1, "Content-Type": "application/pdf"}
    )
    assert unknown_type.status_code == 422 and unknown_type.json()["errors"][0]["field"] == "format"
    no_team = await gateway.client.post(
        "/api/v1/customers/imports?distribute=round_robin", content=b"kind,name\r\n", headers=csv_type
    )
    assert no_team.status_code == 422 and no_team.json()["errors"][0]["field"] == "team_id"
    # An RM may import for itself but not distribute to others.
    distribute = await gateway.client.post(
        "/api/v1/customers/imports?distribute=column", content=_file(_rows()), headers=csv_type
    )
    assert distribute.status_code == 403

    dry = await gateway.client.post("/api/v1/customers/imports?dry_run=true", content=_file(_rows()), headers=csv_type)
    assert dry.status_code == 201 and dry.json()["dry_run"]
    done = await _finished(gateway, rm1, dry.json()["id"])
    assert [r["status"] for r in done["rows"]] == ["would_import"] * 4 + ["failed"]
    listed = await gateway.client.get("/api/v1/customers", headers=rm1)
    assert listed.json()["items"] == [], "a dry run creates nobody"


@pytest.mark.parametrize("gateway_env", [{"CRM_GATEWAY_UPLOAD_RATE_PER_MINUTE": "3"}])
async def test_uploads_are_limited_per_user(gateway: Gateway) -> None:
    """An upload costs the customer service far more than a call (stored, read back, inspected): each user may
    make CRM_GATEWAY_UPLOAD_RATE_PER_MINUTE of them a minute, refused ones included; other users and other calls
    are not held back."""
    rm1, rm2 = await gateway.bearer("rm1"), await gateway.bearer("rm2")
    junk = b"PK\x03\x04 not a spreadsheet"
    statuses = []
    for _ in range(4):
        reply = await gateway.client.post("/api/v1/customers/imports?format=xlsx", content=junk, headers=rm1)
        statuses.append(reply.status_code)
    assert statuses == [422, 422, 422, 429], statuses
    assert reply.json()["reason"] == "RATE_LIMITED" and int(reply.headers["retry-after"]) >= 10  # 3 a minute
    other = await gateway.client.post("/api/v1/customers/imports?format=xlsx", content=junk, headers=rm2)
    assert other.status_code == 422 and "broken spreadsheet" in other.json()["detail"]
    template = await gateway.client.get("/api/v1/customers/import-template?format=csv", headers=rm1)
    assert template.status_code == 200

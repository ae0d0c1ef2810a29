"""Files for the import tests and the import benchmark: valid rows, bad rows of every kind, duplicates."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from crm.common.v1 import paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, import_service_pb2_grpc
from crm.customer.v1 import import_service_pb2 as ipb
from crm_customer.domain.imports import COLUMNS
from crm_platform.auth_context import Identity
from crm_platform.grpc_client import parse_failure
from crm_platform.identifiers import resident_id_check_char
from crm_platform.outbox import unbundled
from crm_platform.schema import outbox
from crm_testing.services import RunningService, identity

IMPORT = ("customer:read", "customer:write", "customer:create", "customer:import")
RM1 = identity("rm1", permissions=IMPORT)


def resident_id(index: int) -> str:
    """A distinct valid resident ID number for ``index`` (birth dates spread over 1950–1999)."""
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=index % 18000)
    body = f"110105{birth:%Y%m%d}{index // 18000 % 1000:03d}"
    return body + resident_id_check_char(body)


def mobile(index: int) -> str:
    """A distinct valid mainland mobile number for ``index``."""
    return f"139{index:08d}"


def good_row(index: int, **overrides: str) -> dict[str, str]:
    """A valid individual row; ``overrides`` change or add cells."""
    row = {
        "kind": "individual",
        "name": f"客户{index}",
        "gender": "male" if index % 2 else "female",
        "id_type": "resident_id",
        "id_number": resident_id(index),
        "mobile": mobile(index),
        "email": f"c{index}@example.com",
        "address": f"北京市朝阳区建国路{index}号",
        "tier": "gold" if index % 10 == 0 else "none",
    }
    row.update(overrides)
    return row


# Bad rows: what breaks, and the field the report must name.
BAD_KINDS: list[tuple[str, dict[str, str]]] = [
    ("id_number", {"id_number": "110105199001011231"}),  # wrong check digit
    ("mobile", {"mobile": "12345"}),
    ("name", {"name": ""}),
    ("gender", {"gender": "unknown"}),
    ("birth_date", {"birth_date": "1990-13-45"}),
    ("email", {"email": "not-an-email"}),
]


def to_csv(rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS, encoding: str = "utf-8-sig") -> bytes:
    """Rows as CSV text in ``encoding`` with a header of ``columns``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def csv_lines(count: int, start: int = 0) -> Iterator[bytes]:
    """A large valid CSV file, streamed a block of lines at a time (the benchmark's file)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    for index in range(start, start + count):
        writer.writerow(good_row(index))
        if out.tell() > 256 * 1024:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


class Importer:
    """Calls of the import service as one caller or another."""

    def __init__(self, svc: RunningService) -> None:
        self.svc = svc
        self.stub = import_service_pb2_grpc.CustomerImportServiceStub(svc.channel)

    async def upload(
        self,
        who: Identity,
        content: bytes,
        file_format: int = ipb.IMPORT_FORMAT_CSV,
        chunk: int = 64 * 1024,
        **options: Any,
    ) -> ipb.UploadImportResponse:
        async def messages() -> AsyncIterator[ipb.UploadImportRequest]:
            yield ipb.UploadImportRequest(options=ipb.ImportOptions(format=file_format, file_name="f.csv", **options))
            for start in range(0, len(content), chunk):
                yield ipb.UploadImportRequest(chunk=content[start : start + chunk])

        return await self.stub.UploadImport(messages(), metadata=self.svc.md(who), timeout=60)

    async def refused(self, who: Identity, content: bytes, **kw: Any) -> Any:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await self.upload(who, content, **kw)
        return parse_failure(err.value)

    async def finished(self, who: Identity, job_id: str, timeout: float = 60) -> ipb.ImportJob:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = (await self.stub.GetImport(ipb.GetImportRequest(import_id=job_id), metadata=self.svc.md(who))).job
            if job.status in (ipb.IMPORT_STATUS_FINISHED, ipb.IMPORT_STATUS_ROLLED_BACK):
                return job
            assert loop.time() < deadline, f"import not finished: {job}"
            await asyncio.sleep(0.05)

    async def rows(self, who: Identity, job_id: str) -> list[ipb.ImportRow]:
        out: list[ipb.ImportRow] = []
        token = ""
        while True:
            page = await self.stub.ListImportRows(
                ipb.ListImportRowsRequest(
                    import_id=job_id, page=paging_pb2.PageRequest(page_size=500, page_token=token)
                ),
                metadata=self.svc.md(who),
            )
            out.extend(page.rows)
            token = page.page.next_page_token
            if not token:
                return out


async def count(db_url: str, table: Any, *where: Any) -> int:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())
    finally:
        await engine.dispose()


async def outbox_events(db_url: str) -> list[tuple[str, str, bytes]]:
    """Every event in the outbox, a bundle's each as a row of its own (:func:`crm_platform.outbox.unbundled`)."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(outbox.c.id, outbox.c.subject, outbox.c.envelope))).all()
    finally:
        await engine.dispose()
    return unbundled(rows)


def exact_file(existing_mobiles: list[str]) -> tuple[bytes, dict[int, tuple[str, str]]]:
    """10,000 rows: exactly 3% bad (each kind of fault), 1% duplicates of an earlier row of the file (same ID
    number: half of them of the row before, half of a row of the batch of 1,000 before), 1% duplicates of existing
    customers (same mobile). Returns the file and row → (status, detail)."""
    rows, expected = [], {}
    for i in range(10_000):
        spreadsheet_row = i + 2
        slot = i % 100
        if slot in (7, 37, 77):
            field, fault = BAD_KINDS[(i // 100 + slot) % len(BAD_KINDS)]
            rows.append(good_row(i, **fault))
            expected[spreadsheet_row] = ("failed", field)
        elif slot == 50:
            # An earlier batch's row is found among the customers it created (or, in a dry run, its recorded keys).
            source = i - 1001 if i >= 1000 and (i // 100) % 2 else i - 1
            rows.append(good_row(i, id_number=resident_id(source)))
            expected[spreadsheet_row] = ("duplicate", f"row:{source + 2}")
        elif slot == 90:
            rows.append(good_row(i, mobile=existing_mobiles[i // 100]))
            expected[spreadsheet_row] = ("duplicate", f"mobile:{existing_mobiles[i // 100]}")
        else:
            rows.append(good_row(i))
            expected[spreadsheet_row] = ("imported", "")
    return to_csv(rows), expected


async def precreate(svc: RunningService, count_: int) -> dict[str, str]:
    """``count_`` existing customers of rm1; mobile → customer id."""
    stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
    made = {}
    for k in range(count_):
        number = mobile(500_000 + k)
        request = customer_service_pb2.CreateCustomerRequest(
            kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
            name=f"既有{k}",
            profile=customer_pb2.CustomerProfile(mobile=number),
        )
        made[number] = (await stub.CreateCustomer(request, metadata=svc.md(RM1), timeout=5)).customer.id
    return made


def check_exact_report(
    rows: list[ipb.ImportRow], expected: dict[int, tuple[str, str]], existing: dict[str, str], dry_run: bool = False
) -> None:
    """The report is ``expected`` row by row; a dry run's rows would import, and create no customer to name."""
    if dry_run:
        assert all(not r.customer_id for r in rows)
        rows = [
            ipb.ImportRow(
                row=r.row,
                status="imported" if r.status == "would_import" else r.status,
                customer_id=f"row-{r.row}" if r.status == "would_import" else "",
                errors=r.errors,
                duplicate_of=f"row-{r.duplicate_row}" if r.duplicate_row else r.duplicate_of,
                duplicate_row=r.duplicate_row,
            )
            for r in rows
        ]
    assert [r.row for r in rows] == sorted(expected), "one report row per data row, in order"
    by_row = {r.row: r for r in rows}
    problems = []
    for number, (status, detail) in expected.items():
        got = by_row[number]
        if got.status != status:
            problems.append(f"row {number}: {got.status}, expected {status}")
        elif status == "failed" and got.errors[0].field != detail:
            problems.append(f"row {number}: failed on {[e.field for e in got.errors]}, expected {detail}")
        elif status == "duplicate" and detail.startswith("row:"):
            earlier = by_row[int(detail[4:])]
            if got.duplicate_row != earlier.row or got.duplicate_of != earlier.customer_id or not earlier.customer_id:
                problems.append(f"row {number}: duplicate of row {got.duplicate_row}/{got.duplicate_of}")
        elif status == "duplicate" and got.duplicate_of != existing[detail[7:]]:
            problems.append(f"row {number}: duplicate of {got.duplicate_of!r}, expected {existing[detail[7:]]}")
        elif status == "imported" and not got.customer_id:
            problems.append(f"row {number}: imported without a customer id")
    assert not problems, "\n".join(problems[:20])

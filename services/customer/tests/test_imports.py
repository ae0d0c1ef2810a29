"""Batch import over real gRPC, a real database and NATS: the exact report of a 10,000-row file, dry run,
re-upload, rollback, distribution, file checks, events and history, and the job's data scope."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import openpyxl
import pytest
from import_files import (
    IMPORT,
    RM1,
    Importer,
    check_exact_report,
    count,
    exact_file,
    good_row,
    outbox_events,
    precreate,
    resident_id,
    to_csv,
)
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.customer.v1 import import_service_pb2 as ipb
from crm_customer.server import SPEC
from crm_customer.store.imports import jobs, report
from crm_customer.store.tables import customer_history, customers
from crm_platform.auth_context import Scope
from crm_platform.grpc_client import parse_failure
from crm_platform.outbox import BUNDLE_SUBJECT
from crm_platform.schema import outbox
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

RM2 = identity("rm2", permissions=IMPORT)
LEAD1 = identity("lead1", roles=("team_lead",), scope=Scope.TEAM, permissions=(*IMPORT, "customer:assign"))
HEAD = identity(
    "head", roles=("branch_head",), scope=Scope.BRANCH, team_id="", permissions=(*IMPORT, "customer:assign")
)
LOBBY = identity("lobby", roles=("lobby_manager",), scope=Scope.BRANCH, team_id="", permissions=("customer:create",))
STAFF = [
    ipb.ImportStaff(user_id="u-rm1", username="rm1", team_id="T1", branch_id="BJ001", roles=["rm"]),
    ipb.ImportStaff(user_id="u-rm2", username="rm2", team_id="T1", branch_id="BJ001", roles=["rm"]),
    ipb.ImportStaff(user_id="u-rm3", username="rm3", team_id="T2", branch_id="BJ001", roles=["rm"]),
    ipb.ImportStaff(user_id="u-t1", username="teller1", team_id="T1", branch_id="BJ001", roles=["teller"]),
    ipb.ImportStaff(user_id="u-x", username="rm9", team_id="T9", branch_id="SH001", roles=["rm"]),
]


@pytest.mark.postgres
async def test_ten_thousand_rows_give_the_exact_report(
    postgres_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=postgres_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        existing = await precreate(svc, 100)
        content, expected = exact_file(list(existing))
        imports = Importer(svc)
        # A dry run first: the same report (rows that would import), nothing written.
        dry = await imports.finished(RM1, (await imports.upload(RM1, content, dry_run=True)).job.id)
        assert (dry.imported, dry.failed, dry.duplicates) == (9_500, 300, 200)
        check_exact_report(await imports.rows(RM1, dry.id), expected, existing, dry_run=True)
        assert await count(postgres_url, customers) == 100
        job = (await imports.upload(RM1, content)).job
        assert (job.total, job.status) == (10_000, ipb.IMPORT_STATUS_QUEUED)
        job = await imports.finished(RM1, job.id)
        assert (job.total, job.processed, job.imported, job.failed, job.duplicates) == (10_000, 10_000, 9_500, 300, 200)
        check_exact_report(await imports.rows(RM1, job.id), expected, existing)
        # Every imported customer exists once, with its history row and its customer.created event.
        assert await count(postgres_url, customers) == 9_500 + 100
        assert await count(postgres_url, customer_history, customer_history.c.note == f"import {job.id}") == 9_500
        events = await outbox_events(postgres_url)
        created = [e for e in events if e[1] == "crm.customer.customer.created"]
        assert len(created) == len({e[0] for e in created}) == 9_500 + 100
        assert [e[1] for e in events].count("crm.customer.import.imported") == 1
        # The import's events in bundles, a batch's to an outbox row (the 100 created one by one have a row each).
        assert await count(postgres_url, outbox, outbox.c.subject == BUNDLE_SUBJECT) == 10
        assert await count(postgres_url, outbox, outbox.c.subject == "crm.customer.customer.created") == 100


async def test_import_events_history_scope_and_masking(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        imports = Importer(svc)
        content = to_csv([good_row(i) for i in range(3)])
        job = await imports.finished(RM1, (await imports.upload(RM1, content)).job.id)
        assert (job.imported, job.failed, job.duplicates) == (3, 0, 0)
        ids = [r.customer_id for r in await imports.rows(RM1, job.id)]
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        first = (
            await stub.GetCustomer(customer_service_pb2.GetCustomerRequest(customer_id=ids[0]), metadata=svc.md(RM1))
        ).customer
        assert first.owner_id == "rm1" and first.team_id == "T1" and first.profile.id_number.startswith("110105*")
        assert first.profile.source_channel == customer_pb2.SOURCE_CHANNEL_IMPORT
        history = await stub.ListCustomerHistory(
            customer_service_pb2.ListCustomerHistoryRequest(customer_id=ids[0]), metadata=svc.md(RM1)
        )
        (entry,) = history.changes
        assert entry.action == "created" and entry.note == f"import {job.id}"
        assert {c.field: c.after for c in entry.changes}["mobile"] == "139****0000"

        # The events reach JetStream: customer.created per customer (other services' directories) and imported.
        nc = await nats.connect(module_nats.url)
        try:
            seen: dict[str, set[str]] = {}
            # The session's NATS holds other tests' events: read from this test's start on.
            since = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=started.isoformat(),
                ack_policy=AckPolicy.NONE,  # unacknowledged, a consumer stops after max_ack_pending messages
            )
            sub = await nc.jetstream().pull_subscribe(
                "crm.customer.>", durable=None, stream="CRM_CUSTOMER", config=since
            )
            deadline = asyncio.get_running_loop().time() + 30
            while asyncio.get_running_loop().time() < deadline:
                try:
                    for m in await sub.fetch(1000, timeout=0.5):
                        envelope = envelope_pb2.EventEnvelope.FromString(m.data)
                        seen.setdefault(envelope.type, set()).add(envelope.subject_id)
                except TimeoutError:
                    pass
                if set(ids) <= seen.get("crm.customer.customer.created", set()) and job.id in seen.get(
                    "crm.customer.import.imported", set()
                ):
                    break
        finally:
            await nc.close()
        outbox_rows = await count(sqlite_url, outbox, outbox.c.published_at.is_(None))
        assert set(ids) <= seen["crm.customer.customer.created"], (outbox_rows, {k: len(v) for k, v in seen.items()})
        assert job.id in seen["crm.customer.import.imported"]

        # The job: its creator and those whose scope covers the creator; nobody else; lobby cannot import.
        for who, visible in ((RM1, True), (RM2, False), (LEAD1, True), (HEAD, True)):
            call = imports.stub.GetImport(ipb.GetImportRequest(import_id=job.id), metadata=svc.md(who))
            if visible:
                assert (await call).job.id == job.id
            else:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
        denied = await imports.refused(LOBBY, content)
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED


async def test_dry_run_validates_and_reports_without_writing(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        imports = Importer(svc)
        rows = [good_row(i) for i in range(5)] + [good_row(9, mobile="1"), good_row(10, id_number=resident_id(0))]
        job = await imports.finished(RM1, (await imports.upload(RM1, to_csv(rows), dry_run=True)).job.id)
        assert (job.dry_run, job.imported, job.failed, job.duplicates) == (True, 5, 1, 1)
        report_rows = await imports.rows(RM1, job.id)
        assert [r.status for r in report_rows] == ["would_import"] * 5 + ["failed", "duplicate"]
        assert report_rows[-1].duplicate_row == 2 and not report_rows[-1].customer_id
        assert await count(sqlite_url, customers) == 0
        assert await count(sqlite_url, customer_history) == 0
        assert await count(sqlite_url, outbox) == 0
        # A dry run is no import: the same file then imports for real, once.
        real = await imports.upload(RM1, to_csv(rows))
        assert not real.reused
        assert (await imports.finished(RM1, real.job.id)).imported == 5


async def test_reupload_of_the_same_file_imports_nothing_twice(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        imports = Importer(svc)
        content = to_csv([good_row(i) for i in range(20)])
        first = await imports.upload(RM1, content)
        await imports.finished(RM1, first.job.id)
        again = await imports.upload(RM1, content, chunk=1000)  # the same bytes, cut differently
        assert again.reused and again.job.id == first.job.id
        assert await count(sqlite_url, customers) == 20
        assert await count(sqlite_url, jobs) == 1
        # Someone of the branch who may not see the first job is told, without it.
        refused = await imports.refused(RM2, content)
        assert refused.code == grpc.StatusCode.ALREADY_EXISTS and refused.reason == "IMPORT_FILE_IMPORTED"
        # The same rows in another file are duplicates, not new customers.
        other = await imports.finished(RM1, (await imports.upload(RM1, content + b"\r\n")).job.id)
        assert (other.imported, other.duplicates) == (0, 20)
        assert await count(sqlite_url, customers) == 20


async def test_rollback_removes_untouched_customers_and_keeps_changed_ones(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        imports = Importer(svc)
        content = to_csv([good_row(i) for i in range(6)])
        job = await imports.finished(RM1, (await imports.upload(RM1, content)).job.id)
        ids = [r.customer_id for r in await imports.rows(RM1, job.id)]
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        await stub.TagCustomer(
            customer_service_pb2.TagCustomerRequest(customer_id=ids[1], add=["高净值"]), metadata=svc.md(RM1)
        )
        update = customer_service_pb2.UpdateCustomerRequest(
            customer_id=ids[2], expected_version=1, name="改名", update_mask={"paths": ["name"]}
        )
        await stub.UpdateCustomer(update, metadata=svc.md(RM1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await imports.stub.RollbackImport(ipb.RollbackImportRequest(import_id=job.id), metadata=svc.md(RM2))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        done = await imports.stub.RollbackImport(
            ipb.RollbackImportRequest(import_id=job.id, reason="wrong file"), metadata=svc.md(RM1)
        )
        assert done.job.status == ipb.IMPORT_STATUS_ROLLED_BACK
        assert (done.job.rolled_back, done.job.kept) == (4, 2)
        assert {r.customer_id: r.note for r in done.kept} == {
            ids[1]: "changed since the import (version 2)",
            ids[2]: "changed since the import (version 2)",
        }
        assert await count(sqlite_url, customers) == 2
        assert await count(sqlite_url, report, report.c.status == "rolled_back") == 4
        erased = outbox.c.subject == "crm.customer.customer.erased"
        assert await count(sqlite_url, outbox, erased) == 4
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await imports.stub.RollbackImport(ipb.RollbackImportRequest(import_id=job.id), metadata=svc.md(RM1))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # Rolled back, the file may come again: the removed customers are imported anew, the kept are duplicates.
        again = await imports.upload(RM1, content)
        assert not again.reused
        redo = await imports.finished(RM1, again.job.id)
        assert (redo.imported, redo.duplicates) == (4, 2)


async def test_distribution_round_robin_within_a_team_and_by_column(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        imports = Importer(svc)
        rows = [good_row(i) for i in range(7)] + [good_row(7, mobile="x")]
        robin = ipb.DISTRIBUTION_ROUND_ROBIN
        job = await imports.finished(
            HEAD, (await imports.upload(HEAD, to_csv(rows), distribution=robin, team_id="T1", staff=STAFF)).job.id
        )
        owners = [r.owner_id for r in await imports.rows(HEAD, job.id) if r.status == "imported"]
        # T1's RMs and tellers of the branch, in username order, in turn: other teams and branches never.
        assert owners == ["u-rm1", "u-rm2", "u-t1", "u-rm1", "u-rm2", "u-t1", "u-rm1"]

        # An RM cannot distribute; a team lead only within the team.
        denied = await imports.refused(RM1, to_csv(rows), distribution=robin, team_id="T1", staff=STAFF)
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
        wrong = await imports.refused(LEAD1, to_csv(rows), distribution=robin, team_id="T2", staff=STAFF)
        assert wrong.code == grpc.StatusCode.INVALID_ARGUMENT and wrong.violations[0].field == "team_id"

        by_column = [
            good_row(20, owner="rm2"),
            good_row(21, owner="teller1"),
            good_row(22, owner="rm3"),  # another team: not the lead's to give
            good_row(23),
            good_row(24, owner="rm9"),  # another branch
        ]
        column = ipb.DISTRIBUTION_COLUMN
        job = await imports.finished(
            LEAD1, (await imports.upload(LEAD1, to_csv(by_column), distribution=column, staff=STAFF)).job.id
        )
        got = [(r.status, r.owner_id, [e.field for e in r.errors]) for r in await imports.rows(LEAD1, job.id)]
        assert got == [
            ("imported", "u-rm2", []),
            ("imported", "u-t1", []),
            ("failed", "", ["owner"]),
            ("failed", "", ["owner"]),
            ("failed", "", ["owner"]),
        ]


def _xlsx(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_files_refused_whole_and_encodings_accepted(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path) as svc:
        imports = Importer(svc)
        rows = [good_row(i) for i in range(3)]
        xlsx_format = ipb.IMPORT_FORMAT_XLSX
        broken_xlsx = _xlsx([["kind", "name"], ["individual", "张三"]])
        cases: list[tuple[str, bytes, int, str]] = [
            ("latin-1 text", to_csv(rows).replace("客户".encode(), b"\xe9\xff"), ipb.IMPORT_FORMAT_CSV, "bad encoding"),
            ("utf-16", to_csv(rows, encoding="utf-16"), ipb.IMPORT_FORMAT_CSV, "UTF-16"),
            (
                "unknown column",
                to_csv(rows).replace(b"gender", b"sex", 1),
                ipb.IMPORT_FORMAT_CSV,
                "unknown column(s) sex",
            ),
            ("no name column", b"kind,mobile\r\nindividual,13800138000\r\n", ipb.IMPORT_FORMAT_CSV, "name"),
            ("empty", b"", ipb.IMPORT_FORMAT_CSV, "empty"),
            ("unclosed quote", to_csv(rows) + b'individual,"open\r\n', ipb.IMPORT_FORMAT_CSV, "never closed"),
            ("truncated xlsx", broken_xlsx[: len(broken_xlsx) // 2], xlsx_format, "broken spreadsheet"),
            ("corrupt xlsx", broken_xlsx[:200] + b"\x00" * 50 + broken_xlsx[250:], xlsx_format, "broken spreadsheet"),
            ("csv sent as xlsx", to_csv(rows), xlsx_format, "not an XLSX"),
            ("xlsx sent as csv", broken_xlsx, ipb.IMPORT_FORMAT_CSV, "spreadsheet (XLSX)"),
        ]
        for label, content, file_format, why in cases:
            failure = await imports.refused(RM1, content, file_format=file_format)
            assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, label
            assert failure.violations[0].field == "file", label
            assert why in failure.violations[0].description, (label, failure.violations[0].description)

        # A file is checked as its upload arrives: a bad header is refused while the rest of the file still streams.
        sent = 0

        async def endless_upload() -> AsyncIterator[ipb.UploadImportRequest]:
            nonlocal sent
            yield ipb.UploadImportRequest(options=ipb.ImportOptions(format=ipb.IMPORT_FORMAT_CSV, file_name="f.csv"))
            yield ipb.UploadImportRequest(chunk=b"kind,nom\r\n")
            for _ in range(2000):  # 128 MB
                yield ipb.UploadImportRequest(chunk=b"individual,x\r\n" * 4681)
                sent += 1
                await asyncio.sleep(0.001)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await imports.stub.UploadImport(endless_upload(), metadata=svc.md(RM1), timeout=60)
        early = parse_failure(err.value)
        assert early.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown column(s) nom" in early.violations[0].description
        assert sent < 100, f"refused only after {sent} of 2,000 chunks"
        assert await count(sqlite_url, customers) == 0
        assert await count(sqlite_url, jobs) == 0, "a refused file leaves no job behind"

        # GB18030 and UTF-8 without BOM are read as such; XLSX with typed cells too.
        gb = await imports.finished(RM1, (await imports.upload(RM1, to_csv(rows, encoding="gb18030"))).job.id)
        assert (gb.encoding, gb.imported) == ("gb18030", 3)
        plain = to_csv([good_row(i) for i in range(10, 12)], encoding="utf-8")
        utf8 = await imports.finished(RM1, (await imports.upload(RM1, plain)).job.id)
        assert (utf8.encoding, utf8.imported) == ("utf-8", 2)
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        listed = await stub.ListCustomers(customer_service_pb2.ListCustomersRequest(name="客户1"), metadata=svc.md(RM1))
        assert len(listed.customers) == 1, "GB18030 names decoded as written"
        sheet = _xlsx(
            [
                ["Kind", "name", "mobile", "birth_date", "do_not_disturb", "interests"],
                ["个人", "王五", 13700137000, dt.date(1985, 5, 6), "是", "基金；理财"],
                [None, None, None, None, None, None],
                ["individual", "", 13700137001, None, None, None],
            ]
        )
        job = await imports.finished(RM1, (await imports.upload(RM1, sheet, file_format=xlsx_format)).job.id)
        assert (job.total, job.imported, job.failed) == (2, 1, 1)
        got = await imports.rows(RM1, job.id)
        assert [(r.row, r.status) for r in got] == [(2, "imported"), (4, "failed")]
        assert got[1].errors[0].field == "name"
        made = (
            await stub.GetCustomer(
                customer_service_pb2.GetCustomerRequest(customer_id=got[0].customer_id), metadata=svc.md(RM1)
            )
        ).customer
        assert made.profile.birth_date == "1985-05-06" and made.profile.do_not_disturb
        assert list(made.profile.interests) == ["基金", "理财"]

        template = await imports.stub.GetImportTemplate(
            ipb.GetImportTemplateRequest(format=ipb.IMPORT_FORMAT_CSV), metadata=svc.md(RM1)
        )
        header = template.content.decode("utf-8-sig").splitlines()[0].split(",")
        assert header[:7] == ["kind", "name", "gender", "birth_date", "id_type", "id_number", "mobile"]
        assert header[-1] == "owner"
        # The template itself (filled) is accepted: its header maps onto the create fields.
        filled = template.content + to_csv([good_row(40)]).split(b"\r\n", 1)[1]
        assert (await imports.finished(RM1, (await imports.upload(RM1, filled)).job.id)).imported == 1
        xlsx_template = await imports.stub.GetImportTemplate(
            ipb.GetImportTemplateRequest(format=ipb.IMPORT_FORMAT_XLSX), metadata=svc.md(RM1)
        )
        book = openpyxl.load_workbook(io.BytesIO(xlsx_template.content), read_only=True)
        assert [c.value for c in next(book.worksheets[0].iter_rows(max_row=1))] == header

"""gRPC ``crm.customer.v1.CustomerImportService``: protobuf in, domain and store calls, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from crm.common.v1 import paging_pb2
from crm.customer.v1 import import_service_pb2 as pb
from crm.customer.v1 import import_service_pb2_grpc
from crm_customer.config import Settings
from crm_customer.domain import require
from crm_customer.domain.import_bounds import ImportLimits
from crm_customer.domain.imports import (
    MAX_FILE_BYTES,
    Distribution,
    ImportFileRejected,
    ImportFormat,
    Staff,
    UploadInspection,
    clean_file_name,
    plan_distribution,
    template,
)
from crm_customer.import_worker import ImportWorker
from crm_customer.store import CustomerStore
from crm_customer.store.imports import ImportJob, ImportStore, ReportRow
from crm_platform import errors
from crm_platform.auth_context import Identity, current_identity, reset_identity, set_identity
from crm_platform.errors import AlreadyExists, FieldViolation, InvalidArgument
from crm_platform.grpc_server import declare_permissions, status_for, verify_caller
from crm_platform.outbox import utcnow
from crm_platform.paging import page_limit
from crm_platform.protobuf import timestamp
from crm_platform.runtime import Context
from crm_platform.scope import in_scope
from crm_platform.validation import collect, require_valid_message

PERMISSION = "customer:import"
_UPLOAD_METHOD = f"/{pb.DESCRIPTOR.services_by_name['CustomerImportService'].full_name}/UploadImport"
MAX_KEPT_SHOWN = 1000
_FORMATS = {pb.IMPORT_FORMAT_CSV: ImportFormat.CSV, pb.IMPORT_FORMAT_XLSX: ImportFormat.XLSX}
_FORMAT_TO_PROTO = {v: k for k, v in _FORMATS.items()}
_DISTRIBUTIONS = {
    pb.DISTRIBUTION_UNSPECIFIED: Distribution.NONE,
    pb.DISTRIBUTION_ROUND_ROBIN: Distribution.ROUND_ROBIN,
    pb.DISTRIBUTION_COLUMN: Distribution.COLUMN,
}
_DISTRIBUTION_TO_PROTO = {v: k for k, v in _DISTRIBUTIONS.items()}
_STATUS = {
    "queued": pb.IMPORT_STATUS_QUEUED,
    "running": pb.IMPORT_STATUS_RUNNING,
    "finished": pb.IMPORT_STATUS_FINISHED,
    "rolled_back": pb.IMPORT_STATUS_ROLLED_BACK,
}


def job_to_proto(job: ImportJob) -> pb.ImportJob:
    """The wire form of a job."""
    message = pb.ImportJob(
        id=job.id,
        status=_STATUS.get(job.status, pb.IMPORT_STATUS_UNSPECIFIED),  # type: ignore[arg-type]
        file_name=job.file_name,
        format=_FORMAT_TO_PROTO[job.format],  # type: ignore[arg-type]
        file_sha256=job.file_sha256,
        file_size=job.file_size,
        encoding=job.encoding,
        dry_run=job.dry_run,
        distribution=_DISTRIBUTION_TO_PROTO[job.distribution],  # type: ignore[arg-type]
        team_id=job.distribution_team_id,
        total=job.total,
        processed=job.processed,
        imported=job.imported,
        failed=job.failed,
        duplicates=job.duplicates,
        rolled_back=job.rolled_back,
        kept=job.kept,
        created_by=job.created_by,
        branch_id=job.branch_id,
        created_at=timestamp(job.created_at),
    )
    if job.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(job.finished_at))
    if job.rolled_back_at is not None:
        message.rolled_back_at.CopyFrom(timestamp(job.rolled_back_at))
    return message


def row_to_proto(row: ReportRow) -> pb.ImportRow:
    """The wire form of a report row."""
    return pb.ImportRow(
        row=row.row,
        status=row.status,
        customer_id=row.customer_id,
        errors=[pb.ImportError(field=f, reason=r) for f, r in row.errors],
        duplicate_of=row.duplicate_of,
        duplicate_row=row.duplicate_row,
        note=row.note,
        owner_id=row.owner_id,
    )


def _file_format(number: int, field: str) -> ImportFormat:
    found = _FORMATS.get(number)  # type: ignore[call-overload]
    if found is None:
        raise InvalidArgument([FieldViolation(field, "must be csv or xlsx")])
    return found


class CustomerImportServicer(import_service_pb2_grpc.CustomerImportServiceServicer):
    """Translates CustomerImportService calls; the upload stream binds its identity and maps errors itself
    (the shared interceptor wraps unary methods only)."""

    def __init__(
        self, store: ImportStore, worker: ImportWorker, secret: str, limits: ImportLimits = ImportLimits()
    ) -> None:
        self._store = store
        self._worker = worker
        self._secret = secret
        self._limits = limits

    async def GetImportTemplate(self, request: Any, context: Any) -> pb.GetImportTemplateResponse:  # noqa: N802
        """See the proto."""
        require(current_identity(), PERMISSION)
        content, content_type, file_name = template(_file_format(request.format, "format"))
        return pb.GetImportTemplateResponse(content=content, content_type=content_type, file_name=file_name)

    async def UploadImport(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """See the proto."""
        token = None
        try:
            identity = verify_caller(tuple(context.invocation_metadata() or ()), self._secret, _UPLOAD_METHOD)
            token = set_identity(identity)
            return await self._upload(identity, aiter(request_iterator))
        except errors.DomainError as exc:
            status = status_for(exc, "customer")
        finally:
            if token is not None:
                reset_identity(token)
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _upload(
        self, identity: Identity, messages: AsyncIterator[pb.UploadImportRequest]
    ) -> pb.UploadImportResponse:
        require(identity, PERMISSION)
        first = await anext(messages, None)
        if first is None or not first.HasField("options"):
            raise InvalidArgument([FieldViolation("options", "must be the first message of the upload")])
        options = first.options
        # The interceptor does not wrap streaming methods, so the options get its text check here.
        require_valid_message(options)
        file_format = _file_format(options.format, "format")
        file_name = clean_file_name(options.file_name)
        with collect() as v:  # the name is shown and exported again: one line, no directory part
            if v.check_text("file_name", file_name) and len(file_name) > 200:
                v.add("file_name", "must be at most 200 characters")
        rule = _DISTRIBUTIONS.get(options.distribution)  # type: ignore[call-overload]
        if rule is None:
            raise InvalidArgument([FieldViolation("distribution", "must be none, round_robin or column")])
        staff = [Staff(s.user_id, s.username, s.team_id, s.branch_id, tuple(s.roles)) for s in options.staff]
        plan = plan_distribution(identity, rule, options.team_id.strip(), staff)
        upload = await self._store.begin_upload(identity, file_format, file_name, options.dry_run, plan, utcnow())
        # Checked as it arrives: a bad file is refused at its first bad chunk, and a good one's facts are ready
        # when its last chunk is stored (while the gateway still streams, rather than in a second pass after).
        inspection = UploadInspection(file_format, self._limits, self._store.preparation.inspect_xlsx)
        try:
            async for message in messages:
                if not message.HasField("chunk"):
                    raise InvalidArgument([FieldViolation("chunk", "only file chunks may follow the options")])
                if upload.size + len(message.chunk) > MAX_FILE_BYTES:
                    raise ImportFileRejected(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; split the file")
                inspection.feed(message.chunk)
                await upload.write(message.chunk)
            sha256 = await upload.close()
            if upload.size == 0:
                raise ImportFileRejected("the file is empty")
            if not options.dry_run:
                earlier = await self._store.reusable(upload.job_id, identity.branch_id, sha256)
                if earlier is not None:
                    await self._store.discard(upload.job_id)
                    return self._reused(identity, earlier)
            facts = await inspection.facts(self._store.file(upload.job_id))
            job = await self._store.queue(upload.job_id, sha256, upload.size, facts, utcnow())
        except BaseException:
            await asyncio.shield(self._store.discard(upload.job_id))
            raise
        self._worker.wake()
        return pb.UploadImportResponse(job=job_to_proto(job))

    def _reused(self, identity: Identity, earlier: ImportJob) -> pb.UploadImportResponse:
        if earlier.created_by != identity.user_id:
            visible = in_scope(
                identity,
                owner=earlier.created_by,
                team=earlier.team_id,
                branch=earlier.branch_id,
                region=earlier.region,
            )
            if not visible:
                raise AlreadyExists(
                    "this file was imported before in your branch by someone else", reason="IMPORT_FILE_IMPORTED"
                )
        return pb.UploadImportResponse(job=job_to_proto(earlier), reused=True)

    async def GetImport(self, request: Any, context: Any) -> pb.GetImportResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, PERMISSION)
        return pb.GetImportResponse(job=job_to_proto(await self._store.get(identity, request.import_id)))

    async def ListImportRows(self, request: Any, context: Any) -> pb.ListImportRowsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, PERMISSION)
        token = request.page.page_token
        after = 0
        if token:  # a row number: a 30-digit one would overflow the database's integer, so it is bounded too
            with collect() as v:
                after = v.bounded_int("page_token", token) or 0
        status = request.status.strip()
        if status and status not in ("imported", "would_import", "failed", "duplicate", "rolled_back", "kept"):
            raise InvalidArgument([FieldViolation("status", "is not a row status")])
        rows, last = await self._store.rows(identity, request.import_id, after, page_limit(request.page), status)
        return pb.ListImportRowsResponse(
            rows=[row_to_proto(r) for r in rows], page=paging_pb2.PageInfo(next_page_token=str(last) if last else "")
        )

    async def RollbackImport(self, request: Any, context: Any) -> pb.RollbackImportResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require(identity, PERMISSION)
        reason = request.reason.strip()
        if len(reason) > 500:
            raise InvalidArgument([FieldViolation("reason", "must be at most 500 characters")])
        job, kept = await self._store.rollback(identity, request.import_id, reason, utcnow())
        # The first kept rows (the job counts them all; the report lists every one with status "kept").
        shown = kept[:MAX_KEPT_SHOWN]
        return pb.RollbackImportResponse(job=job_to_proto(job), kept=[row_to_proto(r) for r in shown])


def wire_imports(server: grpc.aio.Server, ctx: Context, customers: CustomerStore) -> str:
    """Register the import service and start its worker with the service; return the service's full name."""
    settings: Settings = ctx.settings  # type: ignore[assignment]
    store = ImportStore(ctx.engine, ctx.sessions, ctx.outbox, customers, helper_process=settings.import_helper_process)
    worker = ImportWorker(store)
    store.preparation.start()  # the helper inspects uploaded XLSX files: ready before the first one arrives
    ctx.background.append(asyncio.create_task(worker.run(), name="customer-imports"))
    limits = ImportLimits(
        max_rows=settings.import_max_rows,
        max_cells_per_row=settings.import_max_cells_per_row,
        max_uncompressed_bytes=settings.import_max_uncompressed_bytes,
        max_shared_strings_bytes=settings.import_max_shared_strings_bytes,
    )
    servicer = CustomerImportServicer(store, worker, ctx.settings.internal_secret, limits)
    import_service_pb2_grpc.add_CustomerImportServiceServicer_to_server(servicer, server)
    return str(pb.DESCRIPTOR.services_by_name["CustomerImportService"].full_name)


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    pb.DESCRIPTOR.services_by_name["CustomerImportService"],
    {
        "GetImportTemplate": "customer:import",
        "UploadImport": "customer:import",
        "GetImport": "customer:import",
        "ListImportRows": "customer:import",
        "RollbackImport": "customer:import",
    },
)

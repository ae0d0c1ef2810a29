"""``/api/v1/customers/import-template`` and ``/api/v1/customers/imports``: batch import of customers.

The upload is the request body itself (``Content-Type: text/csv`` or the XLSX type; ``?format=`` overrides),
streamed to the customer service in chunks as it arrives — never held whole here. Options are query
parameters. The service checks the file whole (encoding, headers, a broken spreadsheet: 422 naming why),
answers the job at once (201, or 200 with ``reused`` for a file this branch imported before) and imports it
in the background; ``GET /api/v1/customers/imports/{id}`` follows its progress and pages through its report,
``.../report.csv`` downloads the whole report.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Stream

from crm.common.v1 import paging_pb2
from crm.customer.v1 import import_service_pb2 as pb
from crm_gateway.schemas.paging import Cursor, Limit
from crm_platform.clients import CustomerImportClient
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.spreadsheet import safe_row

PERMISSION = "customer:import"
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
UPLOAD_TIMEOUT = 600.0
_CHUNK = 256 * 1024
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_CONTENT_TYPES = {"text/csv": "csv", "application/csv": "csv", "text/plain": "csv", _XLSX: "xlsx"}
_FORMATS = {"csv": pb.IMPORT_FORMAT_CSV, "xlsx": pb.IMPORT_FORMAT_XLSX}
_FORMAT_NAMES = {v: k for k, v in _FORMATS.items()}
_DISTRIBUTIONS = {
    "none": pb.DISTRIBUTION_UNSPECIFIED,
    "round_robin": pb.DISTRIBUTION_ROUND_ROBIN,
    "column": pb.DISTRIBUTION_COLUMN,
}
_DISTRIBUTION_NAMES = {v: k for k, v in _DISTRIBUTIONS.items()}
_STATUS_NAMES = {
    pb.IMPORT_STATUS_QUEUED: "queued",
    pb.IMPORT_STATUS_RUNNING: "running",
    pb.IMPORT_STATUS_FINISHED: "finished",
    pb.IMPORT_STATUS_ROLLED_BACK: "rolled_back",
}
_OWNING_ROLES = frozenset({"rm", "teller", "team_lead", "branch_head"})
_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
Format = Literal["csv", "xlsx"]
RowStatus = Literal["imported", "would_import", "failed", "duplicate", "rolled_back", "kept"]
REPORT_COLUMNS = (
    "row",
    "status",
    "customer_id",
    "owner_id",
    "fields",
    "reasons",
    "duplicate_of",
    "duplicate_row",
    "note",
)


class ImportOut(msgspec.Struct):
    """An import job: its file, options, state and counts."""

    id: str
    status: str
    file_name: str
    format: str
    file_sha256: str
    file_size: int
    encoding: str
    dry_run: bool
    distribution: str
    team_id: str | None
    total: int
    processed: int
    imported: int
    failed: int
    duplicates: int
    rolled_back: int
    kept: int
    created_by: str
    branch_id: str
    created_at: str
    finished_at: str | None
    rolled_back_at: str | None
    reused: bool = False

    @classmethod
    def from_proto(cls, job: pb.ImportJob, reused: bool = False) -> ImportOut:
        """The answer form of a job."""
        return cls(
            id=job.id,
            status=_STATUS_NAMES.get(job.status, "unknown"),
            file_name=job.file_name,
            format=_FORMAT_NAMES.get(job.format, ""),
            file_sha256=job.file_sha256,
            file_size=job.file_size,
            encoding=job.encoding,
            dry_run=job.dry_run,
            distribution=_DISTRIBUTION_NAMES.get(job.distribution, "none"),
            team_id=job.team_id or None,
            total=job.total,
            processed=job.processed,
            imported=job.imported,
            failed=job.failed,
            duplicates=job.duplicates,
            rolled_back=job.rolled_back,
            kept=job.kept,
            created_by=job.created_by,
            branch_id=job.branch_id,
            created_at=_time(job, "created_at") or "",
            finished_at=_time(job, "finished_at"),
            rolled_back_at=_time(job, "rolled_back_at"),
            reused=reused,
        )


class RowError(msgspec.Struct):
    """Why a row failed: the field and the reason."""

    field: str
    reason: str


class ImportRowOut(msgspec.Struct):
    """One row of the report (``row`` as a spreadsheet numbers it: the header is row 1)."""

    row: int
    status: str
    customer_id: str | None
    owner_id: str | None
    errors: list[RowError]
    duplicate_of: str | None
    duplicate_row: int | None
    note: str | None

    @classmethod
    def from_proto(cls, row: pb.ImportRow) -> ImportRowOut:
        """The answer form of a report row."""
        return cls(
            row=row.row,
            status=row.status,
            customer_id=row.customer_id or None,
            owner_id=row.owner_id or None,
            errors=[RowError(e.field, e.reason) for e in row.errors],
            duplicate_of=row.duplicate_of or None,
            duplicate_row=row.duplicate_row or None,
            note=row.note or None,
        )


class ImportReport(msgspec.Struct):
    """A job and a page of its per-row report."""

    job: ImportOut
    rows: list[ImportRowOut]
    next_cursor: str | None


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """Why the import is rolled back (kept in the log and the job's event)."""

    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class RollbackOut(msgspec.Struct):
    """The rolled-back job and the rows whose customers were kept, each with why."""

    job: ImportOut
    kept: list[ImportRowOut]


def _time(job: pb.ImportJob, name: str) -> str | None:
    if not job.HasField(name):
        return None
    return str(getattr(job, name).ToDatetime().isoformat() + "Z")


def _identity(request: Request[Any, Any, Any]) -> Any:
    return request.scope["state"]["identity"]


def _imports(request: Request[Any, Any, Any]) -> CustomerImportClient:
    return request.app.state.clients.customer_import  # type: ignore[no-any-return]


@get("/api/v1/customers/import-template", opt={"permission": PERMISSION})
async def import_template(request: Request[Any, Any, Any], format: Format = "csv") -> Response[bytes]:
    """An empty import file whose header row is the create API's field names (plus ``owner`` for distribution
    by column): ``annual_income`` is the amount, ``annual_income_currency`` its currency (default CNY),
    ``interests`` are separated by ``;``, ``do_not_disturb`` is true or false."""
    reply = await _imports(request).get_import_template(
        _identity(request), pb.GetImportTemplateRequest(format=_FORMATS[format])
    )
    return Response(
        reply.content,
        media_type=reply.content_type,
        headers={"Content-Disposition": f'attachment; filename="{reply.file_name}"'},
    )


def _format(request: Request[Any, Any, Any], explicit: str | None) -> int:
    if explicit:
        return _FORMATS[explicit]
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    found = _CONTENT_TYPES.get(content_type)
    if found is None:
        raise InvalidArgument(
            [FieldViolation("format", f"send Content-Type text/csv or {_XLSX}, or give ?format=csv|xlsx")]
        )
    return _FORMATS[found]


async def _staff(request: Request[Any, Any, Any], distribute: str, team_id: str | None) -> list[pb.ImportStaff]:
    """The staff a distribution may name: the team's (round robin) or the branch's (column) active RMs and tellers."""
    if distribute == "none":
        return []
    identity = _identity(request)
    users = await request.app.state.organisation.list_users(
        branch_id=identity.branch_id,
        team_id=team_id if distribute == "round_robin" else None,
        limit=2000,
        after="",
    )
    return [
        pb.ImportStaff(
            user_id=u["id"],
            username=u["username"],
            team_id=u["team_id"] or "",
            branch_id=u["branch_id"] or "",
            roles=list(u["roles"]),
        )
        for u in users
        if u["status"] == "active" and _OWNING_ROLES.intersection(u["roles"])
    ]


@post(
    "/api/v1/customers/imports",
    opt={"permission": PERMISSION},
    request_max_body_size=MAX_UPLOAD_BYTES,
)
async def upload_import(
    request: Request[Any, Any, Any],
    format: Format | None = None,
    dry_run: bool = False,
    distribute: Literal["none", "round_robin", "column"] = "none",
    team_id: Annotated[str | None, Parameter(required=False, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
    file_name: Annotated[str | None, Parameter(required=False, max_length=200)] = None,
) -> Response[ImportOut]:
    """Upload a CSV (UTF-8 with or without BOM, or GB18030) or XLSX file of customers as the request body.

    ``dry_run`` validates and reports without importing; ``distribute`` gives the customers owners:
    ``round_robin`` in turn among ``team_id``'s RMs and tellers, ``column`` by each row's ``owner`` (a username),
    both needing ``customer:assign`` (a team lead within the team). The same file again imports nothing twice:
    200 with the earlier job and ``reused: true``.
    """
    request.app.state.limits.upload_user.hit(_identity(request).user_id)
    file_format = _format(request, format)
    with_team = (team_id or "").strip()
    if distribute == "round_robin" and not with_team:
        raise InvalidArgument([FieldViolation("team_id", "is required with distribute=round_robin")])
    if distribute != "round_robin" and with_team:
        raise InvalidArgument([FieldViolation("team_id", "applies to distribute=round_robin only")])
    if request.content_length == 0:
        raise InvalidArgument([FieldViolation("file", "the request body is empty: send the file as the body")])
    options = pb.ImportOptions(
        format=file_format,
        file_name=(file_name or "").strip(),
        dry_run=dry_run,
        distribution=_DISTRIBUTIONS[distribute],
        team_id=with_team,
        staff=await _staff(request, distribute, with_team),
    )

    async def messages() -> AsyncIterator[pb.UploadImportRequest]:
        yield pb.UploadImportRequest(options=options)
        buffer = bytearray()
        async for piece in request.stream():
            buffer.extend(piece)
            if len(buffer) >= _CHUNK:
                yield pb.UploadImportRequest(chunk=bytes(buffer))
                buffer.clear()
        if buffer:
            yield pb.UploadImportRequest(chunk=bytes(buffer))

    reply = await _imports(request).upload_import(_identity(request), messages(), timeout=UPLOAD_TIMEOUT)
    job = ImportOut.from_proto(reply.job, reused=reply.reused)
    return Response(
        job, status_code=200 if reply.reused else 201, headers={"Location": f"/api/v1/customers/imports/{job.id}"}
    )


@get("/api/v1/customers/imports/{import_id:str}", opt={"permission": PERMISSION})
async def get_import(
    request: Request[Any, Any, Any],
    import_id: _ID,
    status: RowStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ImportReport:
    """The job's progress and counts, and a page of its per-row report (``status`` filters the rows): imported,
    failed with each field and reason, duplicate of which customer (or which earlier row of the file)."""
    if cursor and not cursor.isdigit():
        raise InvalidArgument([FieldViolation("cursor", "is not a cursor this report returned")])
    job = await _imports(request).get_import(_identity(request), pb.GetImportRequest(import_id=import_id))
    page = await _imports(request).list_import_rows(
        _identity(request),
        pb.ListImportRowsRequest(
            import_id=import_id,
            status=status or "",
            page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or ""),
        ),
    )
    return ImportReport(
        job=ImportOut.from_proto(job.job),
        rows=[ImportRowOut.from_proto(r) for r in page.rows],
        next_cursor=page.page.next_page_token or None,
    )


@get("/api/v1/customers/imports/{import_id:str}/report.csv", opt={"permission": PERMISSION})
async def import_report_csv(request: Request[Any, Any, Any], import_id: _ID) -> Stream:
    """The whole per-row report as CSV (UTF-8 with BOM), streamed a page at a time."""
    await _imports(request).get_import(
        _identity(request), pb.GetImportRequest(import_id=import_id)
    )  # 404 before the stream starts

    async def lines() -> AsyncIterator[bytes]:
        yield "\ufeff".encode() + _csv_line(REPORT_COLUMNS)
        token = ""
        while True:
            page = await _imports(request).list_import_rows(
                _identity(request),
                pb.ListImportRowsRequest(
                    import_id=import_id, page=paging_pb2.PageRequest(page_size=500, page_token=token)
                ),
            )
            yield b"".join(_csv_line(_report_cells(r)) for r in page.rows)
            token = page.page.next_page_token
            if not token:
                return

    return Stream(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-report.csv"'},
    )


def _report_cells(row: pb.ImportRow) -> tuple[object, ...]:
    return (
        row.row,
        row.status,
        row.customer_id,
        row.owner_id,
        ";".join(e.field for e in row.errors),
        "; ".join(f"{e.field}: {e.reason}" for e in row.errors),
        row.duplicate_of,
        row.duplicate_row or "",
        row.note,
    )


def _csv_line(cells: tuple[object, ...]) -> bytes:
    """One CSV record; a cell that starts like a formula is written as text (crm_platform.spreadsheet)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(safe_row(cells))
    return out.getvalue().encode()


@post("/api/v1/customers/imports/{import_id:str}/rollback", opt={"permission": PERMISSION}, status_code=200)
async def rollback_import(request: Request[Any, Any, Any], import_id: _ID, data: RollbackIn) -> RollbackOut:
    """Roll a finished import back as a whole: its customers nobody changed since are removed (each announced as
    erased); the others are kept and listed with why."""
    reply = await _imports(request).rollback_import(
        _identity(request), pb.RollbackImportRequest(import_id=import_id, reason=data.reason.strip())
    )
    return RollbackOut(job=ImportOut.from_proto(reply.job), kept=[ImportRowOut.from_proto(r) for r in reply.kept])


ROUTES = [import_template, upload_import, get_import, import_report_csv, rollback_import]

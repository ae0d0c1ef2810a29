"""Batch import (批量导入): the template, reading CSV and XLSX files as streams of rows, checking a file whole
before any row is imported, turning a row into a customer file, and distributing imported customers to staff.

No SQL or gRPC here: the store hands the file back as an async stream of byte chunks.

* A **file** is accepted or refused whole: CSV text must be UTF-8 (with or without a BOM) or GB18030 (tried
  in that order over the whole file); an XLSX must open as a workbook; the header row must name known
  columns only, each once, including ``kind`` and ``name``. A refusal names why (:class:`ImportFileRejected`).
* **Rows** are numbered as a spreadsheet shows them: the header is row 1. Blank rows are skipped.
* A **row** is valid when the same rules as a single create accept it (:func:`check_profile`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import datetime as dt
import decimal
import enum
import io
import os
import tempfile
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from crm_customer.domain.customer import _SELF_OWNING_ROLES, CustomerKind, Profile, check_profile
from crm_customer.domain.import_bounds import ImportFileRejected, ImportLimits, check_archive
from crm_platform.auth_context import Identity, Scope
from crm_platform.errors import FieldViolation, InvalidArgument, PermissionDenied
from crm_platform.spreadsheet import safe_row
from crm_platform.validation import Violations, collect

# The template's header: the API create field names (annual_income split into amount and currency), then
# ``owner`` for distribution by column.
COLUMNS = (
    "kind",
    "name",
    "gender",
    "birth_date",
    "id_type",
    "id_number",
    "mobile",
    "email",
    "address",
    "occupation",
    "employer",
    "annual_income",
    "annual_income_currency",
    "family_situation",
    "risk_appetite",
    "risk_assessed_on",
    "risk_expires_on",
    "investment_experience",
    "interests",
    "credit_code",
    "industry",
    "main_business",
    "contact_person",
    "contact_mobile",
    "parent_customer_id",
    "tier",
    "source_channel",
    "do_not_disturb",
    "owner",
)
REQUIRED_COLUMNS = ("kind", "name")
OWNER_COLUMN = "owner"
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_ROWS = ImportLimits.max_rows  # the default; a service's settings may set another (ImportLimits)
MAX_CELL_CHARS = 2000
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
DEFAULT_SOURCE_CHANNEL = "import"
_INTEREST_SEPARATORS = (";", "；", "、", "|", "，", ",")
_TRUE = frozenset({"true", "yes", "y", "1", "是", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "否", "f", ""})

# Chinese labels another system's export may carry, mapped onto the API's values.
ALIASES: dict[str, dict[str, str]] = {
    "kind": {"个人": "individual", "对私": "individual", "企业": "corporate", "对公": "corporate"},
    "gender": {"男": "male", "女": "female", "m": "male", "f": "female"},
    "id_type": {"居民身份证": "resident_id", "身份证": "resident_id", "护照": "passport"},
    "risk_appetite": {"保守型": "conservative", "稳健型": "balanced", "激进型": "aggressive"},
    "tier": {"钻石": "diamond", "白金": "platinum", "金": "gold", "金卡": "gold", "无": "none", "普通": "none"},
}


class ImportFormat(enum.StrEnum):
    """The file formats an import accepts."""

    CSV = "csv"
    XLSX = "xlsx"


class Distribution(enum.StrEnum):
    """How imported customers get their owners."""

    NONE = "none"  # the importer (an RM or teller), else the branch pool
    ROUND_ROBIN = "round_robin"  # in turn among a team's staff
    COLUMN = "column"  # the row's ``owner`` column


@dataclass(frozen=True)
class SourceRow:
    """One data row: its spreadsheet row number and its cells by column name (stripped strings)."""

    row: int
    cells: dict[str, str]
    extra: bool = False  # cells beyond the header's columns


@dataclass(frozen=True)
class FileFacts:
    """What an accepted file is: its text encoding (CSV), its columns and how many data rows it holds."""

    encoding: str
    columns: tuple[str, ...]
    total: int


ChunkSource = Callable[[], AsyncIterator[bytes]]


# The header


def check_header(cells: Sequence[object]) -> tuple[str, ...]:
    """The normalised column names of a header row; :class:`ImportFileRejected` naming what is wrong."""
    names = [str(c if c is not None else "").strip().lstrip("\ufeff").strip().lower() for c in cells]
    while names and not names[-1]:
        names.pop()  # trailing empty header cells (spreadsheets pad rows)
    if not names:
        raise ImportFileRejected("the header row is empty; the first row must name the columns (see the template)")
    problems = []
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        problems.append(f"header cell(s) {', '.join(map(str, empty))} are empty")
    unknown = sorted({n for n in names if n and n not in COLUMNS})
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        problems.append(f"column(s) {', '.join(repeated)} appear more than once")
    missing = [n for n in REQUIRED_COLUMNS if n not in names]
    if missing:
        problems.append(f"required column(s) {', '.join(missing)} are missing")
    if problems:
        raise ImportFileRejected("wrong headers: " + "; ".join(problems) + " (the template lists the columns)")
    return tuple(names)


def _row(columns: tuple[str, ...], values: Sequence[object], row: int) -> SourceRow | None:
    """A data row as cells by column; ``None`` when blank. Cells beyond the header's columns must be empty."""
    if values and all(type(v) is str for v in values):
        return _csv_row(columns, values, row)  # type: ignore[arg-type]
    texts = [_cell_text(v) for v in values]
    cells = {c: t for c, t in zip(columns, texts, strict=False) if t}
    extra = any(texts[len(columns) :])
    if not cells and not extra:
        return None
    return SourceRow(row, cells, extra)


def _csv_row(columns: tuple[str, ...], values: Sequence[str], row: int) -> SourceRow | None:
    cells = {c: text for c, v in zip(columns, values, strict=False) if (text := v.strip())}
    extra = len(values) > len(columns) and any(v.strip() for v in values[len(columns) :])
    if not cells and not extra:
        return None
    return SourceRow(row, cells, extra)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(decimal.Decimal(repr(value)))
    return str(value).strip()


# CSV


class CsvRecords:
    """Incremental CSV parsing of decoded text: feed text pieces, take the complete records parsed so far.

    Lines are parsed only when they complete a record (an even count of quote characters so far), so a quoted
    field spanning lines is never cut at a chunk boundary. A piece's complete lines usually end outside quotes:
    they are then counted, split and parsed whole, in C; only a piece that ends inside a quoted field is taken
    line by line, up to where its last complete record ends.
    """

    def __init__(self) -> None:
        self._partial = ""
        self._pending: list[str] = []  # the lines of a record not complete yet
        self._quotes = 0  # the quote characters in them
        self.unterminated = False

    def feed(self, text: str) -> list[list[str]]:
        """Add text; return the records it completed."""
        if not text:
            return []
        text = self._partial + text
        end = text.rfind("\n") + 1
        self._partial = text[end:]
        if not end:
            return []
        complete = text[:end]
        if not self._pending and complete.count('"') % 2 == 0:
            return _parse(io.StringIO(complete))  # its lines, each with its "\n"
        ready: list[str] = []
        for line in io.StringIO(complete):
            self._line(line, ready)
        return _parse(ready)

    def close(self) -> list[list[str]]:
        """The end of the text: the last records (a last line without a newline included)."""
        ready: list[str] = []
        if self._partial:
            self._line(self._partial, ready)
            self._partial = ""
        if self._pending:  # an odd number of quotes up to the end: a quoted field never closed
            self.unterminated = True
            ready.extend(self._pending)
            self._pending = []
        return _parse(ready)

    def _line(self, line: str, ready: list[str]) -> None:
        self._pending.append(line)
        self._quotes += line.count('"')
        if self._quotes % 2 == 0:
            ready.extend(self._pending)
            self._pending = []
            self._quotes = 0


def _parse(lines: Iterable[str]) -> list[list[str]]:
    """The records of lines that end where a record ends."""
    try:
        return list(csv.reader(lines, strict=False))
    except csv.Error as exc:
        raise ImportFileRejected(f"not a readable CSV file ({exc})") from None


def _decoder(encoding: str) -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8-sig" if encoding == "utf-8" else encoding)(errors="strict")


class Undecodable(ValueError):
    """The bytes do not decode in the encoding tried; ``offset`` is where in the file."""

    def __init__(self, encoding: str, offset: int) -> None:
        super().__init__(f"not {encoding} at byte {offset}")
        self.offset = offset


class CsvText:
    """A CSV byte stream in one encoding, chunk by chunk: decoded (:class:`Undecodable` where it does not), checked
    for NUL characters, and parsed into the records each chunk completes."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._decoder = _decoder(encoding)
        self._records = CsvRecords()
        self._offset = 0

    def feed(self, chunk: bytes) -> list[list[str]]:
        """The records completed by the next chunk of bytes."""
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise Undecodable(self.encoding, self._offset + exc.start) from None
        self._offset += len(chunk)
        if "\x00" in text:
            raise ImportFileRejected("the file holds NUL characters: it is not CSV text (UTF-8 or GB18030)")
        return self._records.feed(text)

    def close(self) -> list[list[str]]:
        """The last records, at the end of the stream."""
        try:
            rest = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise Undecodable(self.encoding, self._offset) from None
        tail = self._records.feed(rest) + self._records.close()
        if self._records.unterminated:
            raise ImportFileRejected(
                "a quoted field is never closed (a '\"' is missing); the file is cut short or broken"
            )
        return tail


async def _csv_records(chunks: AsyncIterator[bytes], encoding: str) -> AsyncIterator[list[list[str]]]:
    """Batches of raw records of a CSV stream in ``encoding`` (:class:`Undecodable` when it does not decode)."""
    text = CsvText(encoding)
    async for chunk in chunks:
        batch = text.feed(chunk)
        if batch:
            yield batch
    tail = text.close()
    if tail:
        yield tail


class CsvInspection:
    """The whole-file check of a CSV in one encoding (header, quoting, row count), fed the file's bytes chunk by
    chunk: :class:`ImportFileRejected` as soon as the file is found bad, :class:`Undecodable` when it is not in
    this encoding."""

    def __init__(self, encoding: str, limits: ImportLimits = ImportLimits()) -> None:
        self._text = CsvText(encoding)
        self._limits = limits
        self._columns: tuple[str, ...] | None = None
        self._total = 0
        self._started = False

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the file (the first one also for what a CSV file must not start with)."""
        if not self._started and chunk:
            self._started = True
            _check_start(chunk[:4])
        self._count(self._text.feed(chunk))

    def close(self) -> FileFacts:
        """What the file is, once all of it was fed."""
        self._count(self._text.close())
        if self._columns is None:
            raise ImportFileRejected("the file is empty; the first row must name the columns (see the template)")
        return FileFacts(self._text.encoding, self._columns, self._total)

    def _count(self, records: list[list[str]]) -> None:
        if self._columns is None and records:
            self._columns = check_header(records[0])
            records = records[1:]
        widest = self._limits.max_cells_per_row
        for record in records:
            if "".join(record).strip():  # not blank (what _csv_row gives None for)
                self._total += 1
            if len(record) > widest:
                raise self._limits.too_many_cells()
        if self._total > self._limits.max_rows:
            raise self._limits.too_many_rows()


def _check_start(first: bytes) -> None:
    """Refuse, by its first bytes, a file uploaded as CSV that is plainly something else."""
    if first.startswith(b"PK\x03\x04"):
        raise ImportFileRejected("this is a spreadsheet (XLSX), not CSV text; upload it as xlsx")
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileRejected("bad encoding: the file is UTF-16; save it as UTF-8 (or GB18030) CSV")


async def _inspect_csv_as(source: ChunkSource, encoding: str, limits: ImportLimits) -> FileFacts:
    inspection = CsvInspection(encoding, limits)
    async for chunk in source():
        inspection.feed(chunk)
    return inspection.close()


async def inspect_csv(source: ChunkSource, limits: ImportLimits = ImportLimits()) -> FileFacts:
    """Check a whole CSV file (encoding, header, quoting) and count its rows; :class:`ImportFileRejected` if bad.

    ``source()`` opens the file's byte stream from its start (called again when UTF-8 fails and GB18030 is tried).
    """
    try:
        return await _inspect_csv_as(source, "utf-8", limits)
    except Undecodable as utf8_error:
        try:
            return await _inspect_csv_as(source, "gb18030", limits)
        except Undecodable as gb_error:
            raise ImportFileRejected(
                f"bad encoding: the file is neither UTF-8 (undecodable byte at offset {utf8_error.offset}) nor "
                f"GB18030 (undecodable byte at offset {gb_error.offset}); save it as UTF-8 CSV"
            ) from None


class UploadInspection:
    """:func:`inspect` done as an upload arrives, as far as it can be: a CSV file is checked as UTF-8 chunk by chunk
    (refused at the first bad chunk, not after the whole upload), so that its facts are ready when the upload
    ends. An XLSX file (a zip, read from its end), or a CSV file that turns out not to be UTF-8 (GB18030 is then
    tried from its start), is inspected whole once stored (:meth:`facts`)."""

    def __init__(
        self, file_format: ImportFormat, limits: ImportLimits = ImportLimits(), inspector: XlsxInspector | None = None
    ) -> None:
        self._format = file_format
        self._limits = limits
        self._inspector = inspector or inspect_in_thread
        self._csv = CsvInspection("utf-8", limits) if file_format is ImportFormat.CSV else None

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the upload."""
        if self._csv is None:
            return
        try:
            self._csv.feed(chunk)
        except Undecodable:
            self._csv = None

    async def facts(self, source: ChunkSource) -> FileFacts:
        """What the whole uploaded file is (``source`` opens it as stored)."""
        if self._csv is not None:
            with contextlib.suppress(Undecodable):  # cut inside a character at its end: see whether GB18030 reads it
                return self._csv.close()
        return await inspect(source, self._format, self._limits, self._inspector)


async def csv_rows(
    source: ChunkSource, facts: FileFacts, after_row: int, batch_size: int
) -> AsyncIterator[list[SourceRow]]:
    """The data rows of an inspected CSV file after row ``after_row``, in batches of about ``batch_size``."""
    out: list[SourceRow] = []
    row = 0
    async for batch in _csv_records(source(), facts.encoding):
        for record in batch:
            row += 1
            if row == 1 or row <= after_row:
                continue
            parsed = _csv_row(facts.columns, record, row)
            if parsed is not None:
                out.append(parsed)
        if len(out) >= batch_size:
            while len(out) >= batch_size:
                yield out[:batch_size]
                out = out[batch_size:]
    if out:
        yield out


# XLSX


@contextlib.asynccontextmanager
async def spooled(source: ChunkSource) -> AsyncIterator[str]:
    """The path of a temporary file holding the file's bytes (an XLSX is a zip: it needs random access), for a
    worker thread or the import helper process to open. It is unlinked when the block ends or is cancelled; a
    reader that opened it meanwhile keeps its own descriptor to the end."""
    handle, path = tempfile.mkstemp(prefix="crm-import-", suffix=".xlsx")
    try:
        try:
            async for chunk in source():
                view = memoryview(chunk)
                while view:  # a local file: each write takes what the page cache takes, without waiting
                    view = view[os.write(handle, view) :]
        finally:
            os.close(handle)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _open_sheet(spooled: IO[bytes], limits: ImportLimits | None) -> tuple[Any, Iterator[tuple[object, ...]]]:
    """The workbook and its first sheet's rows; with ``limits``, the file is first checked against them as a
    stream (:func:`check_archive`: also every part's CRC), which an inspected file need not be again."""
    import openpyxl  # local: only imports of spreadsheets need it

    if not zipfile.is_zipfile(spooled):
        raise ImportFileRejected("broken spreadsheet: not an XLSX file (it is not a zip archive)")
    spooled.seek(0)
    try:
        if limits is not None:
            check_archive(spooled, limits)
        spooled.seek(0)
        workbook = openpyxl.load_workbook(spooled, read_only=True, data_only=True)
        sheet = workbook.worksheets[0]
        # Rows as written, not padded out to the <dimension> the sheet declares (a bomb declares A1:XFD1048576).
        sheet.reset_dimensions()
        return workbook, sheet.iter_rows(values_only=True)
    except ImportFileRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever openpyxl or zipfile raise, the file is broken
        raise ImportFileRejected(f"broken spreadsheet: {type(exc).__name__}: {str(exc)[:200]}") from None


def inspect_xlsx(spooled: IO[bytes], limits: ImportLimits = ImportLimits()) -> FileFacts:
    """Check a whole XLSX file (within ``limits``, opens, header, every row readable) and count its rows.

    CPU-bound (openpyxl parses about 30,000 rows a second): run it off the event loop (:func:`inspect`)."""
    workbook, rows = _open_sheet(spooled, limits)
    try:
        columns: tuple[str, ...] | None = None
        total = 0
        last_row = limits.max_rows + 1
        for number, values in enumerate(rows, start=1):
            # openpyxl fills the rows a sheet skips (<row r="1000000000">) and a row's cells up to its last
            # reference: the spreadsheet's row numbers and widths are bounded, not only the rows written.
            if number > last_row:
                raise limits.too_many_rows()
            if not values and columns is not None:
                continue  # a row openpyxl filled in (or an empty one): blank, and cheap to pass over
            if len(values) > limits.max_cells_per_row:
                raise limits.too_many_cells(number)
            if columns is None:
                columns = check_header(values)
                continue
            if _row(columns, values, number) is not None:
                total += 1
    except ImportFileRejected:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImportFileRejected(f"broken spreadsheet: {type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        workbook.close()
    if columns is None:
        raise ImportFileRejected("the spreadsheet is empty; the first row must name the columns (see the template)")
    return FileFacts("", columns, total)


def xlsx_rows(path: str, facts: FileFacts, after_row: int, batch_size: int) -> Generator[list[SourceRow], None, None]:
    """The data rows of the inspected XLSX file at ``path`` after row ``after_row``, in batches of ``batch_size``."""
    with open(path, "rb") as file:
        yield from _xlsx_batches(file, facts, after_row, batch_size)


def _xlsx_batches(
    file: IO[bytes], facts: FileFacts, after_row: int, batch_size: int
) -> Generator[list[SourceRow], None, None]:
    workbook, rows = _open_sheet(file, None)
    try:
        out: list[SourceRow] = []
        for number, values in enumerate(rows, start=1):
            if number == 1 or number <= after_row:
                continue
            parsed = _row(facts.columns, values, number)
            if parsed is not None:
                out.append(parsed)
                if len(out) >= batch_size:
                    yield out
                    out = []
        if out:
            yield out
    finally:
        workbook.close()


async def read_rows(
    source: ChunkSource,
    file_format: ImportFormat,
    facts: FileFacts,
    after_row: int,
    batch_size: int,
    reader: XlsxReader | None = None,
) -> AsyncIterator[list[SourceRow]]:
    """The data rows of an inspected file of either format after row ``after_row``, in batches; an XLSX file is
    spooled and read by ``reader`` (:func:`rows_in_thread` unless another is given)."""
    if file_format is ImportFormat.CSV:
        async for batch in csv_rows(source, facts, after_row, batch_size):
            yield batch
        return
    async with (
        spooled(source) as path,
        contextlib.aclosing((reader or rows_in_thread)(path, facts, after_row, batch_size)) as batches,
    ):
        async for batch in batches:
            yield batch


async def rows_in_thread(
    path: str, facts: FileFacts, after_row: int, batch_size: int
) -> AsyncIterator[list[SourceRow]]:
    """:func:`xlsx_rows` in a worker thread, batch by batch: where the service has no import helper process.

    openpyxl parses a batch of 1,000 rows in ~30 ms of CPU: in a thread, the service's event loop keeps running
    meanwhile, though on its GIL. One batch at a time: a generator runs in one thread at once, and it is closed
    only once the thread returned it."""
    batches = xlsx_rows(path, facts, after_row, batch_size)
    parsing: asyncio.Future[list[SourceRow] | None] | None = None
    try:
        while True:
            parsing = asyncio.ensure_future(asyncio.to_thread(_next_batch, batches))
            parsed = await asyncio.shield(parsing)
            if parsed is None:
                break
            yield parsed
    finally:
        if parsing is not None and not parsing.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait([parsing])
        batches.close()


def _next_batch(batches: Iterator[list[SourceRow]]) -> list[SourceRow] | None:
    return next(batches, None)


def inspect_xlsx_file(path: str, limits: ImportLimits) -> FileFacts:
    """:func:`inspect_xlsx` of the file at ``path`` (opened here: in a worker thread or the import helper process)."""
    with open(path, "rb") as spooled:
        return inspect_xlsx(spooled, limits)


async def inspect_in_thread(path: str, limits: ImportLimits) -> FileFacts:
    """:func:`inspect_xlsx_file` in a worker thread: where the service has no import helper process."""
    return await asyncio.to_thread(inspect_xlsx_file, path, limits)


# Where an XLSX file is inspected (:func:`inspect_in_thread`, or the import helper process of
# ``store.import_prepare``): given the path of the spooled file and the limits, its facts or ImportFileRejected.
XlsxInspector = Callable[[str, ImportLimits], Awaitable[FileFacts]]
# Where an inspected XLSX file's rows are read (:func:`rows_in_thread`, or the import helper process): given the
# spooled file's path, its facts, the row to read after and the batch size, the batches of :func:`read_rows`.
XlsxReader = Callable[[str, FileFacts, int, int], AsyncIterator[list[SourceRow]]]


async def inspect(
    source: ChunkSource,
    file_format: ImportFormat,
    limits: ImportLimits = ImportLimits(),
    inspector: XlsxInspector = inspect_in_thread,
) -> FileFacts:
    """Check a whole file of either format; :class:`ImportFileRejected` naming why it is refused.

    An XLSX is spooled (:func:`spooled`) and checked by ``inspector``, off the event loop: the cheap pass refuses a
    bomb within a second, and a real file's full parse (30,000 rows a second) must hold neither the service's
    event loop nor, where the service has an import helper process, its GIL."""
    if file_format is ImportFormat.CSV:
        return await inspect_csv(source, limits)
    async with spooled(source) as path:
        return await inspector(path, limits)


# File names

MAX_FILE_NAME_CHARS = 200


def clean_file_name(raw: str) -> str:
    """The name an upload is stored under: its base name only (no directories, whichever separator the client's
    system uses), without control or format characters (a NUL, a line break that forges a log line, a
    right-to-left override that shows ``exe.csv`` as ``vsc.exe``), and never only dots."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    kept = kept.strip()
    return "" if not kept.strip(".") else kept


# Templates


def template(file_format: ImportFormat) -> tuple[bytes, str, str]:
    """An empty template (header row only): content, content type and file name."""
    if file_format is ImportFormat.CSV:
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerow(safe_row(COLUMNS))
        # A BOM, so spreadsheet programs open the UTF-8 text (Chinese names) correctly.
        return codecs.BOM_UTF8 + text.getvalue().encode(), CSV_CONTENT_TYPE, "customer-import-template.csv"
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "customers"
    sheet.append(safe_row(COLUMNS))
    for index in range(1, len(COLUMNS) + 1):
        letter = openpyxl.utils.get_column_letter(index)
        # Text cells: an 18-digit ID number or a mobile typed as a number would lose digits.
        for cell in sheet[f"{letter}2:{letter}1000"]:
            cell[0].number_format = "@"
        sheet.column_dimensions[letter].width = max(12, len(COLUMNS[index - 1]) + 2)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue(), XLSX_CONTENT_TYPE, "customer-import-template.xlsx"


# Rows


@dataclass(frozen=True)
class ValidRow:
    """A row that passed validation: its kind, profile and the ``owner`` cell (for distribution by column)."""

    row: int
    kind: CustomerKind
    profile: Profile
    owner: str


def _alias(name: str, value: str) -> str:
    """The API value a cell of an aliased column stands for: its alias (as written, then in lower case), else the
    cell in lower case."""
    aliases = ALIASES.get(name, {})
    stripped = value.strip()
    found = aliases.get(stripped)
    if found is not None:
        return found
    lowered = stripped.lower()
    return aliases.get(lowered, lowered)


def row_to_raw(cells: Mapping[str, str], v: Violations) -> tuple[str, dict[str, object]]:
    """The kind and the raw profile values of a row, as :func:`check_profile` takes them."""
    raw: dict[str, object] = {}
    for name, value in cells.items():
        if name in ALIASES:
            raw[name] = _alias(name, value)
        elif name in ("interests", "do_not_disturb", OWNER_COLUMN):
            continue
        else:
            raw[name] = value
    if len(cells.get("name", "")) > MAX_CELL_CHARS:
        raw["name"] = cells["name"][:101]
    interests = cells.get("interests", "")
    if interests:
        for separator in _INTEREST_SEPARATORS[1:]:
            interests = interests.replace(separator, ";")
        raw["interests"] = [i for i in (p.strip() for p in interests.split(";")) if i]
    flag = cells.get("do_not_disturb", "").strip().lower()
    if flag in _TRUE:
        raw["do_not_disturb"] = True
    elif flag not in _FALSE:
        v.add("do_not_disturb", "must be true or false (是/否)")
    if not raw.get("source_channel"):
        raw["source_channel"] = DEFAULT_SOURCE_CHANNEL
    kind = str(raw.pop("kind", "") or "")
    return kind, raw


def validate_row(row: SourceRow, today: dt.date) -> ValidRow | list[FieldViolation]:
    """The row as a valid customer file, or every violation naming its field."""
    v = Violations()
    if row.extra:
        v.add("row", "has more cells than the header has columns")
    for name, value in row.cells.items():
        if len(value) > MAX_CELL_CHARS:
            v.add(name, f"must be at most {MAX_CELL_CHARS} characters")
    kind, raw = row_to_raw(row.cells, v)
    if not kind:
        v.add("kind", "is required: individual or corporate (个人/企业)")
        profile = None
    else:
        profile = check_profile(v, kind, raw, today)
    if v.items or profile is None:
        return v.items
    return ValidRow(row.row, CustomerKind(kind), profile, row.cells.get(OWNER_COLUMN, ""))


def duplicate_keys(profile: Profile) -> list[tuple[str, str]]:
    """The unique facts of a customer file duplicates are detected on: (field, normalised value)."""
    keys = []
    if profile.id_number:
        keys.append(("id_number", profile.id_number))
    if profile.mobile:
        keys.append(("mobile", profile.mobile))
    if profile.credit_code:
        keys.append(("credit_code", profile.credit_code))
    return keys


# Distribution


@dataclass(frozen=True)
class Staff:
    """A member of staff who may receive imported customers."""

    user_id: str
    username: str
    team_id: str
    branch_id: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class DistributionPlan:
    """Who the job's customers go to: the rule, its team, and the staff it may name (in turn order)."""

    rule: Distribution
    team_id: str = ""
    staff: tuple[Staff, ...] = ()
    default_owner: str = ""
    default_team: str = ""
    by_name: dict[str, Staff] = field(default_factory=dict)

    def owner_for(self, imported_before: int, owner_cell: str) -> tuple[str, str] | FieldViolation:
        """The (owner, team) of the next imported customer, given how many the job imported before it."""
        if self.rule is Distribution.ROUND_ROBIN:
            chosen = self.staff[imported_before % len(self.staff)]
            return chosen.user_id, chosen.team_id
        if self.rule is Distribution.COLUMN:
            if not owner_cell:
                return FieldViolation(OWNER_COLUMN, "is required: the username of the RM or teller to own it")
            named = self.by_name.get(owner_cell.strip().lower())
            if named is None:
                return FieldViolation(OWNER_COLUMN, "is not an active RM or teller you may assign customers to")
            return named.user_id, named.team_id
        if owner_cell:
            return FieldViolation(OWNER_COLUMN, "is set but the import does not distribute by the owner column")
        return self.default_owner, self.default_team


_WIDE_SCOPES = frozenset({Scope.BRANCH, Scope.REGION, Scope.ALL})
_ROUND_ROBIN_ROLES = frozenset({"rm", "teller"})  # a round robin feeds the front line, not the team's lead
MAX_STAFF = 2000


def plan_distribution(identity: Identity, rule: Distribution, team_id: str, staff: Sequence[Staff]) -> DistributionPlan:
    """Check who may distribute how, and to whom; raise naming each problem.

    Without a rule the importer owns the customers when an RM or teller (as with a single create), else they
    go to the branch pool. A rule assigns to others, which is the branch head's call within the branch and a
    team lead's within the team (as :func:`plan_assignment`). Staff must hold an owning role in the branch.
    """
    if not identity.branch_id:
        raise InvalidArgument([FieldViolation("branch_id", "caller belongs to no branch")])
    self_owned = bool(_SELF_OWNING_ROLES.intersection(identity.roles))
    default_owner = identity.user_id if self_owned else ""
    default_team = identity.team_id if self_owned else ""
    if rule is Distribution.NONE:
        return DistributionPlan(rule, default_owner=default_owner, default_team=default_team)
    if not identity.has("customer:assign"):
        raise PermissionDenied("distributing imported customers to staff requires permission customer:assign")
    eligible = [
        s for s in staff if s.branch_id == identity.branch_id and _SELF_OWNING_ROLES.intersection(s.roles) and s.user_id
    ]
    team_lead = identity.scope not in _WIDE_SCOPES
    if team_lead:
        if identity.scope is not Scope.TEAM or not identity.team_id:
            raise PermissionDenied("a team lead distributes only within the team; the branch head within the branch")
        eligible = [s for s in eligible if s.team_id == identity.team_id]
    with collect() as v:
        if len(staff) > MAX_STAFF:
            v.add("staff", f"must list at most {MAX_STAFF} members")
        if rule is Distribution.ROUND_ROBIN:
            if not team_id:
                v.add("team_id", "is required for a round robin (the team whose staff take turns)")
            elif team_lead and team_id != identity.team_id:
                v.add("team_id", "must be your own team")
            eligible = [s for s in eligible if s.team_id == team_id and _ROUND_ROBIN_ROLES.intersection(s.roles)]
            if team_id and not eligible:
                v.add("team_id", "has no active RM or teller in your branch to distribute to")
    by_name: dict[str, Staff] = {}
    for s in eligible:
        by_name[s.user_id.lower()] = s
        if s.username:
            by_name[s.username.lower()] = s
    return DistributionPlan(
        rule,
        team_id=team_id if rule is Distribution.ROUND_ROBIN else "",
        staff=tuple(sorted(eligible, key=lambda s: (s.username, s.user_id))),
        by_name=by_name,
    )


# Rollback


def untouched(version: int, created_at: dt.datetime, updated_at: dt.datetime, erased: bool) -> str:
    """Why an imported customer must be kept at rollback ("" when nobody changed it since the import)."""
    if erased:
        return "erased since the import"
    if version != 1 or updated_at != created_at:
        return f"changed since the import (version {version})"
    return ""

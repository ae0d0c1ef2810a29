"""Bounds on an import file, checked while it is read, so that a spreadsheet bomb — a small XLSX that declares a
million rows, inflates to gigabytes, or holds one huge string — is refused after reading about as much of it as
the limit allows: never inflated whole, never parsed to its end.

An XLSX is a zip of XML parts. openpyxl (read-only mode) streams the first sheet, but it reads every other part
whole (the shared strings above all, kept as a list of ``str``), and it fills a sheet's missing rows and cells
out to each row number and cell reference it meets. So before openpyxl opens a file, :func:`check_archive`
reads it once the cheap way:

* the zip's central directory is bounded before :mod:`zipfile` parses it (an entry is ~50 bytes and becomes a
  ``ZipInfo`` of ~500), and the parts' declared uncompressed sizes are added up: over the limit, the file is
  refused without inflating a byte;
* every part is then inflated as a stream, 64 KiB at a time (``zlib`` releases the GIL meanwhile), with a
  counter: the real sizes are held to the same limits as the declared ones (zipfile also stops at the declared
  size, and the CRC check at a part's end catches a part that lied);
* in the XML parts, C-level ``bytes.count`` and ``find`` (no per-tag Python work: 1,000,001 rows take ~0.15 s)
  count the rows, the cells since a row began, and the bytes since the last ``<``: text between two tags longer
  than any cell Excel holds (32,767 characters) is a whitespace bomb, refused at its first 256 KiB;
* a sheet's ``<dimension>`` (what it declares it spans) is checked against the row and cell limits.

While openpyxl then reads the sheet, ``inspect_xlsx`` (domain/imports.py) keeps a running count of the row
numbers and the cells of each row, which bounds what the cheap pass cannot see (a jump to row 1,000,000,000).
"""

from __future__ import annotations

import re
import struct
import zipfile
from dataclasses import dataclass
from typing import IO

from crm_platform.errors import FieldViolation, InvalidArgument

READ_BYTES = 64 * 1024
MAX_TEXT_RUN = 256 * 1024  # Excel's 32,767 characters, at up to 8 bytes each (entities, _xHHHH_ escapes)
MAX_DIRECTORY_BYTES = 4 * 1024 * 1024  # the zip's central directory: ~40,000 entries; an XLSX has a few dozen
MAX_MAIN_PREFIXES = 4  # the namespace prefixes a part may bind to the sheet's namespace (usually none)
_MAIN_NS = b"http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_PREFIX = re.compile(rb"xmlns:([A-Za-z_][\w.-]*)\s*=\s*[\"']" + re.escape(_MAIN_NS) + rb"[\"']")
_DIMENSION = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?dimension\s[^>]*?ref\s*=\s*[\"']([^\"']*)[\"']")
_REFERENCE = re.compile(rb"\$?([A-Za-z]{0,3})\$?(\d*)")
# What may follow an element's name in a tag, all made a space (one pass, in C) so that one pattern per element
# name finds its start tags: ``<row `` then matches ``<row>``, ``<row/>`` and ``<row\n``, but neither ``</row>``
# (now ``< row ``) nor ``<rowBreaks``.
_NAME_ENDS = bytes.maketrans(b">/\t\n\r", b"     ")


class ImportFileRejected(InvalidArgument):
    """The file is refused whole (encoding, headers, a broken spreadsheet, a limit); nothing of it is imported."""

    reason = "IMPORT_FILE_REJECTED"

    def __init__(self, why: str) -> None:
        super().__init__([FieldViolation("file", why)], message=f"the file is refused: {why}")
        self.why = why

    def __reduce__(self) -> tuple[type[ImportFileRejected], tuple[str]]:
        # Pickled by its reason: raised in the import helper process, it is raised again in the service.
        return (type(self), (self.why,))


@dataclass(frozen=True)
class ImportLimits:
    """How large an import file may be (the service's settings, ``CRM_CUSTOMER_IMPORT_MAX_*``)."""

    max_rows: int = 1_000_000  # data rows, the header not counted
    max_cells_per_row: int = 200  # the template has 29 columns; spreadsheets pad rows with empty cells
    max_uncompressed_bytes: int = 1024 * 1024 * 1024  # an XLSX's parts once inflated, all together
    max_shared_strings_bytes: int = 128 * 1024 * 1024  # each XML part openpyxl reads whole (shared strings, styles)

    def too_many_rows(self) -> ImportFileRejected:
        """The refusal of a file past :attr:`max_rows`."""
        return ImportFileRejected(f"more than the limit of {self.max_rows:,} rows (besides the header); split the file")

    def too_many_cells(self, row: int | None = None) -> ImportFileRejected:
        """The refusal of a row past :attr:`max_cells_per_row`."""
        where = f"row {row} has" if row else "a row has"
        return ImportFileRejected(f"{where} more than the limit of {self.max_cells_per_row:,} cells")


def check_archive(spooled: IO[bytes], limits: ImportLimits) -> None:
    """Refuse an XLSX file past ``limits`` or broken as a zip, reading it as a stream (see the module's text).

    ``zipfile`` errors (a bad CRC, an unknown compression) propagate: the caller names them a broken spreadsheet.
    """
    _check_directory(spooled)
    spooled.seek(0)
    with zipfile.ZipFile(spooled) as archive:
        parts = [info for info in archive.infolist() if not info.is_dir()]
        declared = sum(info.file_size for info in parts)
        if declared > limits.max_uncompressed_bytes:
            raise _too_large(declared, limits)
        for info in parts:
            if _read_whole(info.filename) and info.file_size > limits.max_shared_strings_bytes:
                raise _part_too_large(info.filename, limits)
        inflated = 0
        for info in parts:
            whole = _read_whole(info.filename)
            scan = PartScan(info.filename, limits) if _is_xml(info.filename) else None
            size = 0
            with archive.open(info) as part:
                while chunk := part.read(READ_BYTES):
                    size += len(chunk)
                    inflated += len(chunk)
                    if inflated > limits.max_uncompressed_bytes:
                        raise _too_large(inflated, limits)
                    if whole and size > limits.max_shared_strings_bytes:
                        raise _part_too_large(info.filename, limits)
                    if scan is not None:
                        scan.feed(chunk)
            if scan is not None:
                scan.close()


class PartScan:
    """The cheap pass over one XML part, fed its inflated bytes in chunks.

    Each chunk is scanned up to its last ``<``, the rest carried into the next: so every tag scanned is whole, and
    an element's name is matched exactly with ``bytes.count`` (see :data:`_NAME_ENDS`). The carried text is what
    follows the last ``<``: longer than :data:`MAX_TEXT_RUN`, it is a text run no spreadsheet writes.
    """

    def __init__(self, name: str, limits: ImportLimits) -> None:
        self.name = name
        self.limits = limits
        self.rows = 0
        self._carry = b""
        self._cells = 0  # cells since the last row began
        self._prefixes: set[bytes] = set()
        self._row_tags: tuple[bytes, ...] = (b"<row ",)  # matched where the name's ends are made a space
        self._row_starts: tuple[bytes, ...] = (b"<row",)  # matched as they are (see _scan)
        self._cell_tags: tuple[bytes, ...] = (b"<c ",)
        self._dimension_seen = False

    def feed(self, chunk: bytes) -> None:
        """Scan the next chunk of the part."""
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"<")
        if cut <= 0:
            self._carry = data
            self._check_run()
            return
        self._carry = data[cut:]
        self._check_run()
        self._scan(data, cut)

    def close(self) -> None:
        """The end of the part: scan what was carried."""
        if self._carry:
            self._scan(self._carry, len(self._carry))
            self._carry = b""

    def _check_run(self) -> None:
        if len(self._carry) > MAX_TEXT_RUN:
            raise ImportFileRejected(
                f"part {self.name} of the XLSX holds more than {MAX_TEXT_RUN // 1024} KiB of text in one run "
                "(no spreadsheet cell holds that much): it is not a spreadsheet to import"
            )

    def _scan(self, data: bytes, end: int) -> None:
        """Scan ``data[:end]`` (searched in place, by offsets: a 64 KiB slice per chunk would be copied)."""
        if data.find(b"xmlns:", 0, end) >= 0:
            self._learn_prefixes(data[:end])
        if not self._dimension_seen:
            self._check_dimension(data[:end])
        # Rows: every tag whose name begins with ``row`` (no copy of the chunk: a sheet's ``rowBreaks`` is one
        # more, at most); exactly, as below, only for the chunk that would pass the limit.
        rows = sum(data.count(tag, 0, end) for tag in self._row_starts)
        if self.rows + rows > self.limits.max_rows + 1:
            rows = sum(data.translate(_NAME_ENDS).count(tag, 0, end) for tag in self._row_tags)
        self.rows += rows
        if self.rows > self.limits.max_rows + 1:
            raise self.limits.too_many_rows()
        if not rows:
            self._cells += self._count_cells(data, 0, end)
        else:
            first = min(at for tag in self._row_starts if (at := data.find(tag, 0, end)) >= 0)
            self._cells += self._count_cells(data, 0, first)
            if self._cells > self.limits.max_cells_per_row:
                raise self.limits.too_many_cells()
            last = max(data.rfind(tag, 0, end) for tag in self._row_starts)
            # Rows that begin and end inside this chunk hold at most its length / 4 cells: their cells are
            # counted as openpyxl reads them.
            self._cells = self._count_cells(data, last, end)
        if self._cells > self.limits.max_cells_per_row:
            raise self.limits.too_many_cells()

    def _count_cells(self, data: bytes, start: int, end: int) -> int:
        """The cells' start tags in ``data[start:end]`` (exactly: ``<c`` also begins ``<col``, ``<cfRule`` …)."""
        if start >= end:
            return 0
        segment = data[start:end].translate(_NAME_ENDS)
        return sum(segment.count(tag) for tag in self._cell_tags)

    def _learn_prefixes(self, segment: bytes) -> None:
        found = set(_PREFIX.findall(segment)) - self._prefixes
        if not found:
            return
        self._prefixes |= found
        if len(self._prefixes) > MAX_MAIN_PREFIXES:
            raise ImportFileRejected(f"part {self.name} of the XLSX binds its namespace to too many prefixes")
        spellings = [b"", *(p + b":" for p in sorted(self._prefixes))]
        self._row_tags = tuple(b"<" + prefix + b"row " for prefix in spellings)
        self._row_starts = tuple(b"<" + prefix + b"row" for prefix in spellings)
        self._cell_tags = tuple(b"<" + prefix + b"c " for prefix in spellings)

    def _check_dimension(self, segment: bytes) -> None:
        found = _DIMENSION.search(segment)
        if found is None:
            if b"sheetData" in segment:  # the dimension comes before the data, or not at all
                self._dimension_seen = True
            return
        self._dimension_seen = True
        last_column, last_row = 0, 0
        for reference in found.group(1).split(b":"):
            match = _REFERENCE.fullmatch(reference.strip())
            if match is None:
                continue  # openpyxl ignores what it cannot read, and its running checks hold
            letters, digits = match.groups()
            last_column = max(last_column, _column_number(letters))
            last_row = max(last_row, int(digits) if digits and len(digits) < 12 else 0)
        if last_row > self.limits.max_rows + 1:
            raise ImportFileRejected(
                f"the sheet declares {last_row - 1:,} rows besides the header, more than the limit of "
                f"{self.limits.max_rows:,}; split the file"
            )
        if last_column > self.limits.max_cells_per_row:
            raise ImportFileRejected(
                f"the sheet declares {last_column:,} columns, more than the limit of "
                f"{self.limits.max_cells_per_row:,} cells per row"
            )


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number


def _is_xml(name: str) -> bool:
    return name.lower().endswith((".xml", ".rels"))


def _read_whole(name: str) -> bool:
    """Whether openpyxl reads the part whole: every XML part but a worksheet (streamed) or a drawing it skips."""
    lowered = name.lower()
    return _is_xml(lowered) and "/worksheets/" not in lowered


def _too_large(size: int, limits: ImportLimits) -> ImportFileRejected:
    return ImportFileRejected(
        f"the XLSX inflates to more than the limit of {limits.max_uncompressed_bytes // (1024 * 1024):,} MiB "
        f"(at least {size // (1024 * 1024):,} MiB); split the file"
    )


def _part_too_large(name: str, limits: ImportLimits) -> ImportFileRejected:
    return ImportFileRejected(
        f"part {name} of the XLSX is larger than the limit of "
        f"{limits.max_shared_strings_bytes // (1024 * 1024):,} MiB for the shared strings and the parts read whole"
    )


def _check_directory(spooled: IO[bytes]) -> None:
    """Refuse a zip whose central directory is too large to parse, before :mod:`zipfile` does.

    The end-of-directory record is in the last 64 KiB (its comment included); a ZIP64 archive's directory size is
    in the ZIP64 record its locator (just before) points to.
    """
    spooled.seek(0, 2)
    size = spooled.tell()
    start = max(0, size - (65_535 + 22 + 20))
    spooled.seek(start)
    tail = spooled.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # not a zip: zipfile says so
    (directory,) = struct.unpack_from("<L", tail, at + 12)
    locator = at - 20
    if locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        if record + 56 <= size:
            spooled.seek(record)
            head = spooled.read(56)
            if head[:4] == b"PK\x06\x06":
                (directory,) = struct.unpack_from("<Q", head, 40)
    if directory > MAX_DIRECTORY_BYTES:
        raise ImportFileRejected(
            f"the XLSX lists more parts than a spreadsheet has (a {directory // 1024:,} KiB directory)"
        )

"""Hostile XLSX files built in memory with :mod:`zipfile` (issue 29): no binary file is committed, and deflate
shrinks their repetitive XML a thousandfold, so a test or a benchmark makes each in well under a second.

* :func:`many_rows` — a sheet declaring (``<dimension>``) and holding ``rows`` rows: 1,000,001 rows are ~320 KB.
* :func:`whitespace_string` — ~``megabytes`` MB of whitespace in one shared string (``where="shared"``) or one
  inline string (``where="inline"``): 200 MB are ~200 KB.
* :func:`workbook` — any sheet XML and shared strings, for the cases in between (limits at their boundary).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "{shared}</Types>"
)
_SHARED_TYPE = (
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{_MAIN}" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="customers" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/>'
    "{shared}</Relationships>"
)
_SHARED_REL = (
    '<Relationship Id="rId2" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
    'Target="sharedStrings.xml"/>'
)
HEADER_ROW = (
    '<row r="1"><c r="A1" t="inlineStr"><is><t>kind</t></is></c><c r="B1" t="inlineStr"><is><t>name</t></is></c></row>'
)


def inline(text: str) -> str:
    """A cell of inline text (no reference: openpyxl numbers it after the one before)."""
    return f'<c t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def workbook(
    sheet_data: Iterable[bytes | str],
    *,
    dimension: str = "",
    shared: Iterable[bytes | str] | None = None,
    before_data: str = "",
    after_data: str = "",
) -> bytes:
    """An XLSX whose first sheet's ``<sheetData>`` is the concatenated pieces, streamed into the zip as they
    come (so a gigabyte of XML never sits in memory); ``shared`` is the inner XML of ``<sst>`` if any."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES.format(shared=_SHARED_TYPE if shared else ""))
        archive.writestr("_rels/.rels", _ROOT_RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS.format(shared=_SHARED_REL if shared else ""))
        if shared is not None:
            with archive.open("xl/sharedStrings.xml", "w") as part:
                part.write(f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{_MAIN}">'.encode())
                for piece in shared:
                    part.write(piece.encode() if isinstance(piece, str) else piece)
                part.write(b"</sst>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as part:
            head = f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{_MAIN}">'
            if dimension:
                head += f'<dimension ref="{dimension}"/>'
            part.write((head + before_data + "<sheetData>").encode())
            for piece in sheet_data:
                part.write(piece.encode() if isinstance(piece, str) else piece)
            part.write(f"</sheetData>{after_data}</worksheet>".encode())
    return out.getvalue()


def data_rows(count: int, cells: int = 2) -> Iterable[bytes]:
    """``count`` rows of ``cells`` inline cells each, after the header, in blocks of 1,000 rows."""
    row = ("<row>" + inline("individual") + inline("x") * (cells - 1) + "</row>").encode()
    block = row * 1000
    for _ in range(count // 1000):
        yield block
    yield row * (count % 1000)


def many_rows(rows: int = 1_000_001, declared: bool = True) -> bytes:
    """The row bomb: a header and ``rows`` data rows, declared in ``<dimension>`` unless ``declared=False``."""
    dimension = f"A1:B{rows + 1}" if declared else ""
    return workbook([HEADER_ROW, *data_rows(rows)], dimension=dimension)


def whitespace_string(megabytes: int = 200, where: str = "shared") -> bytes:
    """The whitespace bomb: ~``megabytes`` MB of spaces in one string, shared or inline, in a valid sheet."""
    spaces = (b" " * (1024 * 1024) for _ in range(megabytes))
    if where == "shared":
        shared = [b'<si><t xml:space="preserve">', *spaces, b"</t></si>"]
        row = '<row r="2"><c r="A2" t="inlineStr"><is><t>individual</t></is></c><c r="B2" t="s"><v>0</v></c></row>'
        return workbook([HEADER_ROW, row], dimension="A1:B2", shared=shared)
    cell_start = b'<row r="2"><c r="A2" t="inlineStr"><is><t>individual</t></is></c><c r="B2" t="inlineStr"><is><t>'
    return workbook([HEADER_ROW, cell_start, *spaces, b"</t></is></c></row>"], dimension="A1:B2")

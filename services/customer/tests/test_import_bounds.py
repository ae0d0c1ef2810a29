"""Imports are bounded (issue 29): spreadsheet bombs are refused as they are read — never inflated whole, never
parsed to their end — the limits hold at their boundary, file names are stored as base names, and the files
the service writes cannot smuggle a formula into a spreadsheet."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import openpyxl
import pytest
from import_files import RM1, Importer, count, good_row, to_csv

from crm.customer.v1 import import_service_pb2 as ipb
from crm_customer.domain.import_bounds import MAX_TEXT_RUN, ImportFileRejected, ImportLimits
from crm_customer.domain.imports import ImportFormat, clean_file_name, inspect, template
from crm_customer.server import SPEC
from crm_customer.store.imports import jobs
from crm_platform.spreadsheet import safe_cell, safe_row
from crm_testing import xlsx_bombs
from crm_testing.nats_server import NatsServer
from crm_testing.services import running_service

XLSX = ipb.IMPORT_FORMAT_XLSX


def source(data: bytes, piece: int = 64 * 1024) -> object:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), piece):
            yield data[start : start + piece]

    return chunks


async def refusal(data: bytes, limits: ImportLimits = ImportLimits(), file_format: str = "xlsx") -> str:
    with pytest.raises(ImportFileRejected) as err:
        await inspect(source(data), ImportFormat(file_format), limits)  # type: ignore[arg-type]
    return err.value.violations[0].description


async def total(data: bytes, limits: ImportLimits = ImportLimits(), file_format: str = "xlsx") -> int:
    return (await inspect(source(data), ImportFormat(file_format), limits)).total  # type: ignore[arg-type]


async def test_the_row_bomb_is_refused_by_its_dimension_or_its_rows() -> None:
    declared = xlsx_bombs.many_rows(1_000_001)
    assert len(declared) < 600_000, "the bomb is as small as the one the issue names (319 KB)"
    assert "declares 1,000,001 rows" in await refusal(declared)
    # Without a <dimension>, the running count of rows refuses it (before openpyxl parses a row of it).
    assert "more than the limit of 1,000,000 rows" in await refusal(xlsx_bombs.many_rows(1_000_001, declared=False))
    # A jump to row 900,000,000 (openpyxl fills the rows in between) is bounded by the row numbers.
    sparse = xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, '<row r="900000000"><c r="A900000000"><v>1</v></c></row>'])
    assert "more than the limit of 1,000,000 rows" in await refusal(sparse)
    # A namespace prefix and a line break in the tag do not hide the rows.
    prefixed = b"".join(xlsx_bombs.data_rows(50)).replace(b"<row>", b"<x:row\n>").replace(b"</row>", b"</x:row>")
    bound = f"<x:sheetData xmlns:x='{xlsx_bombs._MAIN}'>".encode() + prefixed + b"</x:sheetData>"
    assert "more than the limit of 40 rows" in await refusal(
        xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, bound]), ImportLimits(max_rows=40)
    )


@pytest.mark.parametrize("where", ["shared", "inline"])
async def test_the_whitespace_bomb_is_refused_without_being_inflated(where: str) -> None:
    bomb = xlsx_bombs.whitespace_string(200, where=where)
    assert len(bomb) < 400_000, "200 MB of whitespace deflate to a few hundred KB"
    tracemalloc.start()
    try:
        why = await refusal(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = "xl/sharedStrings.xml" if where == "shared" else f"more than {MAX_TEXT_RUN // 1024} KiB of text"
    assert expected in why, why
    assert peak < 16 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated to refuse a 200 MB bomb"
    # Under a generous part limit the shared string is still refused: by its run of text, not its size.
    generous = ImportLimits(max_shared_strings_bytes=1 << 30)
    assert f"more than {MAX_TEXT_RUN // 1024} KiB of text" in await refusal(xlsx_bombs.whitespace_string(2), generous)


async def test_rows_limit_at_its_boundary_in_either_format() -> None:
    limits = ImportLimits(max_rows=5)
    assert await total(xlsx_bombs.many_rows(5, declared=True), limits) == 5
    assert await total(xlsx_bombs.many_rows(5, declared=False), limits) == 5
    assert "declares 6 rows" in await refusal(xlsx_bombs.many_rows(6, declared=True), limits)
    assert "more than the limit of 5 rows" in await refusal(xlsx_bombs.many_rows(6, declared=False), limits)
    # The cheap pass counts every tag whose name begins with "row"; at the limit it counts exactly, so a sheet's
    # page breaks (<rowBreaks>) are not rows, and <row/> or <row\t> are.
    breaks = '<rowBreaks count="1" manualBreakCount="1"><brk id="3" max="16383" man="1"/></rowBreaks>'
    at_limit = [xlsx_bombs.HEADER_ROW, *xlsx_bombs.data_rows(5)]
    assert await total(xlsx_bombs.workbook(at_limit, after_data=breaks), limits) == 5
    assert "more than the limit of 5 rows" in await refusal(
        xlsx_bombs.workbook([*at_limit, "<row/>"], after_data=breaks), limits
    )
    assert "more than the limit of 5 rows" in await refusal(xlsx_bombs.workbook([*at_limit, "<row\t/>"]), limits)
    rows = [good_row(i) for i in range(6)]
    assert await total(to_csv(rows[:5]), limits, "csv") == 5
    assert "more than the limit of 5 rows" in await refusal(to_csv(rows), limits, "csv")


async def test_cells_per_row_and_sizes_at_their_boundary() -> None:
    limits = ImportLimits(max_cells_per_row=40)
    assert await total(xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, *xlsx_bombs.data_rows(3, cells=40)]), limits) == 3
    wide = xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, *xlsx_bombs.data_rows(3, cells=41)])
    assert "has more than the limit of 40 cells" in await refusal(wide, limits)
    # A cell reference far to the right (openpyxl would fill the row up to it), a declared width, one row of
    # millions of cells (refused while inflating, before openpyxl builds the row).
    far = xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, '<row r="2"><c r="XFD2"><v>1</v></c></row>'])
    assert "more than the limit of 200 cells" in await refusal(far)
    declared = xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW], dimension="A1:XFD2")
    assert "declares 16,384 columns" in await refusal(declared)
    endless = xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, "<row>", "<c/>" * 2_000_000, "</row>"])
    assert "a row has more than the limit of 200 cells" in await refusal(endless)
    csv_wide = b"kind,name\r\nindividual,x" + b"," * 40 + b"\r\n"
    assert "more than the limit of 40 cells" in await refusal(csv_wide, limits, "csv")
    # Sizes: declared in the zip's directory (refused before inflating), and of each part read whole.
    big = xlsx_bombs.many_rows(20_000, declared=False)
    assert "inflates to more than the limit of 1 MiB" in await refusal(
        big, ImportLimits(max_uncompressed_bytes=1 << 20)
    )
    assert await total(big, ImportLimits(max_uncompressed_bytes=64 << 20)) == 20_000
    shared = xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW], shared=["<si><t>x</t></si>" * 100_000])
    assert "part xl/sharedStrings.xml" in await refusal(shared, ImportLimits(max_shared_strings_bytes=1 << 20))


def test_file_names_keep_only_their_base_name() -> None:
    assert clean_file_name("C:\\Users\\rm1\\Desktop\\客户.xlsx") == "客户.xlsx"
    assert clean_file_name("../../etc/passwd") == "passwd"
    assert clean_file_name("branch\u202excsv.exe") == "branchxcsv.exe"  # no right-to-left override
    assert clean_file_name("a\x00b\r\nc\x1b[31m.csv") == "abc[31m.csv"
    assert clean_file_name("  ..  ") == ""
    assert clean_file_name("/") == ""


def test_written_cells_never_start_a_formula() -> None:
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
    assert [safe_cell(v) for v in hostile] == ["'" + v for v in hostile]
    assert safe_row(["张三", 12, None, "a=b", -5]) == ["张三", 12, None, "a=b", -5]
    content, _, _ = template(ImportFormat.CSV)
    header = next(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert not [c for c in header if c.startswith(("=", "+", "-", "@"))]
    book = openpyxl.load_workbook(io.BytesIO(template(ImportFormat.XLSX)[0]), read_only=True)
    assert [c.value for c in next(book.worksheets[0].iter_rows(max_row=1))] == header


async def _upload_named(imports: Importer, content: bytes, file_name: str) -> ipb.UploadImportResponse:
    async def messages() -> AsyncIterator[ipb.UploadImportRequest]:
        yield ipb.UploadImportRequest(options=ipb.ImportOptions(format=ipb.IMPORT_FORMAT_CSV, file_name=file_name))
        yield ipb.UploadImportRequest(chunk=content)

    return await imports.stub.UploadImport(messages(), metadata=imports.svc.md(RM1), timeout=60)  # type: ignore[no-any-return]


async def test_the_service_refuses_bombs_and_honours_its_settings(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    env = {"CRM_CUSTOMER_IMPORT_MAX_ROWS": "3", "CRM_CUSTOMER_IMPORT_MAX_CELLS_PER_ROW": "40"}
    async with running_service(
        SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path, extra_env=env
    ) as svc:
        imports = Importer(svc)
        cases = [
            (xlsx_bombs.many_rows(1_000_001), "declares 1,000,001 rows"),
            (xlsx_bombs.many_rows(1_000_001, declared=False), "more than the limit of 3 rows"),
            (xlsx_bombs.whitespace_string(200, "shared"), "xl/sharedStrings.xml"),
            (xlsx_bombs.whitespace_string(200, "inline"), "KiB of text in one run"),
            (xlsx_bombs.many_rows(4, declared=False), "more than the limit of 3 rows"),
            (xlsx_bombs.workbook([xlsx_bombs.HEADER_ROW, *xlsx_bombs.data_rows(1, cells=41)]), "40 cells"),
        ]
        for content, why in cases:
            failure = await imports.refused(RM1, content, file_format=XLSX)
            assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, why
            assert failure.violations[0].field == "file", why
            assert why in failure.violations[0].description, (why, failure.violations[0].description)
        refused_csv = await imports.refused(RM1, to_csv([good_row(i) for i in range(4)]))
        assert "more than the limit of 3 rows" in refused_csv.violations[0].description
        assert await count(sqlite_url, jobs) == 0, "a refused file leaves no job behind"

        at_limit = await imports.upload(RM1, xlsx_bombs.many_rows(3, declared=True), file_format=XLSX)
        assert at_limit.job.total == 3
        named = await _upload_named(imports, to_csv([good_row(i) for i in range(3)]), "..\\..\\C:\\tmp/客户.csv")
        assert named.job.file_name == "客户.csv"
        done = await imports.finished(RM1, named.job.id)
        assert (done.imported, done.file_name) == (3, "客户.csv")

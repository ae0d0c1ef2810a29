"""Unit tests of reading import files: encodings, chunk boundaries, headers, rows, cells and distribution rules."""

from __future__ import annotations

import codecs
import datetime as dt
import io
from collections.abc import AsyncIterator

import openpyxl
import pytest
from import_files import good_row, to_csv

from crm_customer.domain.imports import (
    COLUMNS,
    CsvRecords,
    Distribution,
    ImportFileRejected,
    ImportFormat,
    SourceRow,
    Staff,
    UploadInspection,
    ValidRow,
    check_header,
    inspect,
    plan_distribution,
    read_rows,
    template,
    untouched,
    validate_row,
)
from crm_platform.auth_context import Scope
from crm_platform.errors import PermissionDenied
from crm_testing.services import identity

TODAY = dt.date(2026, 6, 1)


def source(data: bytes, piece: int) -> object:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), piece):
            yield data[start : start + piece]

    return chunks


async def rows_of(data: bytes, piece: int = 7, file_format: ImportFormat = ImportFormat.CSV) -> list[SourceRow]:
    facts = await inspect(source(data, piece), file_format)  # type: ignore[arg-type]
    out: list[SourceRow] = []
    async for batch in read_rows(source(data, piece), file_format, facts, 1, 2):  # type: ignore[arg-type]
        out.extend(batch)
    assert len(out) == facts.total
    return out


async def inspected_on_upload(data: bytes, piece: int, file_format: ImportFormat = ImportFormat.CSV) -> object:
    """The facts of a file inspected as its upload arrives in chunks of ``piece`` bytes (:class:`UploadInspection`)."""
    inspection = UploadInspection(file_format)
    for start in range(0, len(data), piece):
        inspection.feed(data[start : start + piece])
    return await inspection.facts(source(data, piece))  # type: ignore[arg-type]


async def rejected(data: bytes, file_format: ImportFormat = ImportFormat.CSV) -> str:
    """Why a file is refused, the same whether inspected once stored or as it is uploaded."""
    with pytest.raises(ImportFileRejected) as err:
        await inspect(source(data, 5), file_format)  # type: ignore[arg-type]
    assert err.value.violations[0].field == "file"
    with pytest.raises(ImportFileRejected) as on_upload:
        await inspected_on_upload(data, 5, file_format)
    assert on_upload.value.violations == err.value.violations
    return err.value.violations[0].description


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 64, 10_000])
async def test_any_chunking_reads_the_same_rows(piece: int) -> None:
    # Quoted fields with commas, quotes and newlines; multi-byte characters cut anywhere between chunks.
    text = 'kind,name,address\r\nindividual,"李, ""明""","北京市\n朝阳区"\r\n\r\ncorporate,公司,上海\r\nindividual,王,'
    rows = await rows_of(text.encode("utf-8"), piece)
    assert [(r.row, r.cells) for r in rows] == [
        (2, {"kind": "individual", "name": '李, "明"', "address": "北京市\n朝阳区"}),
        (4, {"kind": "corporate", "name": "公司", "address": "上海"}),
        (5, {"kind": "individual", "name": "王"}),
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
async def test_utf8_with_or_without_bom_and_gb18030(encoding: str) -> None:
    data = to_csv([good_row(1, name="张三丰", address="广州市天河区")], encoding=encoding)
    facts = await inspect(source(data, 3), ImportFormat.CSV)  # type: ignore[arg-type]
    assert facts.encoding == ("gb18030" if encoding == "gb18030" else "utf-8")
    assert await inspected_on_upload(data, 3) == facts  # GB18030: found not UTF-8 on the way, then read whole
    (row,) = await rows_of(data, 3)
    assert row.cells["name"] == "张三丰" and row.cells["kind"] == "individual"  # no BOM left on the first header


async def test_files_refused_with_their_reason() -> None:
    assert "neither UTF-8" in await rejected("kind,name\n个人,张".encode() + b"\x80\x80\xff")
    assert "UTF-16" in await rejected(codecs.BOM_UTF16_LE + "kind,name".encode("utf-16-le"))
    assert "NUL" in await rejected(b"kind,name\nindividual,a\x00b\n")
    assert "empty" in await rejected(b"")
    assert "never closed" in await rejected(b'kind,name\nindividual,"open\n')
    assert "spreadsheet (XLSX)" in await rejected(b"PK\x03\x04rest")
    assert "not a zip" in await rejected(b"kind,name\n", ImportFormat.XLSX)


@pytest.mark.parametrize("piece", [1, 4, 64, 10_000])
async def test_an_upload_is_inspected_as_it_arrives(piece: int) -> None:
    text = 'kind,name,address\r\nindividual,"李, ""明""","北京市\n朝阳区"\r\n\r\ncorporate,公司,上海\r\nindividual,王,'
    data = text.encode("utf-8")
    assert await inspected_on_upload(data, piece) == await inspect(source(data, piece), ImportFormat.CSV)  # type: ignore[arg-type]
    # A bad header is refused with the chunk that completes it, before the rest of the upload arrives.
    inspection = UploadInspection(ImportFormat.CSV)
    with pytest.raises(ImportFileRejected) as err:
        inspection.feed(b"kind,nom,name\n" + b"individual,x,y\n" * 1000)
    assert "unknown column(s) nom" in err.value.violations[0].description
    # A file cut inside a UTF-8 character at its very end is not UTF-8: it is read whole as GB18030 instead.
    cut = "kind,name\nindividual,王\n".encode()[:-2]
    assert (await inspected_on_upload(cut, 4)).encoding == "gb18030"  # type: ignore[attr-defined]


def test_header_rules() -> None:
    assert check_header(["\ufeffKind ", " NAME", "mobile", "", None]) == ("kind", "name", "mobile")
    for header, why in [
        ([], "empty"),
        (["kind", "name", "kind"], "kind appear more than once"),
        (["kind", "name", "sex", "nom"], "unknown column(s) nom, sex"),
        (["name", "mobile"], "required column(s) kind are missing"),
        (["kind", "", "name"], "header cell(s) 2 are empty"),
    ]:
        with pytest.raises(ImportFileRejected) as err:
            check_header(header)
        assert why in err.value.violations[0].description, header


def test_template_header_is_the_create_fields() -> None:
    content, content_type, name = template(ImportFormat.CSV)
    assert content.startswith(codecs.BOM_UTF8) and content_type.startswith("text/csv") and name.endswith(".csv")
    assert tuple(content.decode("utf-8-sig").strip().split(",")) == COLUMNS
    content, _, name = template(ImportFormat.XLSX)
    sheet = openpyxl.load_workbook(io.BytesIO(content), read_only=True).worksheets[0]
    assert tuple(c.value for c in next(sheet.iter_rows(max_row=1))) == COLUMNS and name.endswith(".xlsx")


async def test_xlsx_cells_become_text() -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["kind", "name", "mobile", "birth_date", "annual_income", "do_not_disturb"])
    sheet.append(["individual", " 赵六 ", 13800138000, dt.datetime(1990, 1, 2), 1234.5, True])
    sheet.append([None, None, None, None, None, None])
    sheet.append(["individual", "钱七", None, None, None, None, "stray"])
    out = io.BytesIO()
    book.save(out)
    rows = await rows_of(out.getvalue(), 100, ImportFormat.XLSX)
    assert [r.row for r in rows] == [2, 4]
    assert rows[0].cells == {
        "kind": "individual",
        "name": "赵六",
        "mobile": "13800138000",
        "birth_date": "1990-01-02",
        "annual_income": "1234.5",
        "do_not_disturb": "true",
    }
    assert rows[1].extra and not rows[0].extra


def test_row_validation_names_each_field() -> None:
    valid = validate_row(
        SourceRow(2, good_row(1, interests="基金；理财、保险", do_not_disturb="是", gender="男")), TODAY
    )
    assert isinstance(valid, ValidRow)
    assert valid.profile.interests == ("基金", "理财", "保险") and valid.profile.do_not_disturb
    assert valid.profile.gender == "male" and valid.profile.source_channel == "import"
    corporate = validate_row(
        SourceRow(3, {"kind": "企业", "name": "某公司", "credit_code": "91350100M000100Y43"}), TODAY
    )
    assert isinstance(corporate, ValidRow) and corporate.kind.value == "corporate"

    bad = validate_row(
        SourceRow(4, good_row(2, mobile="123", do_not_disturb="maybe", tier="bronze", name="x" * 101)), TODAY
    )
    assert isinstance(bad, list)
    assert {v.field for v in bad} == {"mobile", "do_not_disturb", "tier", "name"}
    missing_kind = validate_row(SourceRow(5, {"name": "无类型"}), TODAY)
    assert isinstance(missing_kind, list) and missing_kind[0].field == "kind"
    extra = validate_row(SourceRow(6, good_row(3), extra=True), TODAY)
    assert isinstance(extra, list) and extra[0].field == "row"


def test_csv_records_hold_back_an_open_quote() -> None:
    records = CsvRecords()
    assert records.feed('a,"b\n') == []
    assert records.feed('c",d\ne,f\n') == [["a", "b\nc", "d"], ["e", "f"]]
    assert records.close() == []


STAFF = [
    Staff("u-b", "b-rm", "T1", "BJ001", ("rm",)),
    Staff("u-a", "a-teller", "T1", "BJ001", ("teller",)),
    Staff("u-l", "lead1", "T1", "BJ001", ("team_lead",)),
    Staff("u-c", "c-rm", "T2", "BJ001", ("rm",)),
    Staff("u-x", "x-rm", "T1", "SH001", ("rm",)),
    Staff("u-n", "n-lobby", "T1", "BJ001", ("lobby_manager",)),
]
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="", permissions=("customer:assign",))
LEAD = identity("lead1", roles=("team_lead",), scope=Scope.TEAM, permissions=("customer:assign",))


def test_distribution_rules() -> None:
    own = plan_distribution(identity("rm1"), Distribution.NONE, "", [])
    assert own.owner_for(0, "") == ("rm1", "T1")
    pool = plan_distribution(identity("lobby", roles=("lobby_manager",)), Distribution.NONE, "", [])
    assert pool.owner_for(0, "") == ("", "")
    assert pool.owner_for(0, "rm1").field == "owner"  # type: ignore[union-attr]

    robin = plan_distribution(HEAD, Distribution.ROUND_ROBIN, "T1", STAFF)
    assert [robin.owner_for(i, "")[0] for i in range(5)] == ["u-a", "u-b", "u-a", "u-b", "u-a"]  # type: ignore[index]
    column = plan_distribution(LEAD, Distribution.COLUMN, "", STAFF)
    assert column.owner_for(0, "B-RM") == ("u-b", "T1") and column.owner_for(0, "u-l") == ("u-l", "T1")
    for name in ("c-rm", "x-rm", "n-lobby", "nobody", ""):
        assert column.owner_for(0, name).field == "owner", name  # type: ignore[union-attr]

    with pytest.raises(PermissionDenied):
        plan_distribution(identity("rm1"), Distribution.ROUND_ROBIN, "T1", STAFF)
    for team in ("", "T2", "T9"):
        with pytest.raises(Exception) as err:
            plan_distribution(LEAD if team == "T2" else HEAD, Distribution.ROUND_ROBIN, team, STAFF)
        assert err.value.violations[0].field == "team_id"  # type: ignore[attr-defined]


def test_rollback_keeps_what_was_touched() -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert untouched(1, at, at, False) == ""
    assert "version 2" in untouched(2, at, at + dt.timedelta(seconds=1), False)
    assert "erased" in untouched(2, at, at, True)

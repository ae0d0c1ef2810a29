"""Files for the import tests and the import benchmark: valid rows, bad rows of every kind, duplicates."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator

from crm_customer.domain.imports import COLUMNS
from crm_platform.identifiers import resident_id_check_char


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

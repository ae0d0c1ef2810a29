"""The import report CSV cannot carry a formula into the spreadsheet that opens it (issue 29, OWASP CSV
injection): a cell starting with =, +, -, @, a tab or a carriage return is written with a leading quote."""

from __future__ import annotations

import csv
import io

from crm.customer.v1 import import_service_pb2 as pb
from crm_gateway.routes.customer_imports import _csv_line, _report_cells


def test_a_formula_looking_report_cell_is_written_as_text() -> None:
    row = pb.ImportRow(
        row=7,
        status="kept",
        customer_id="c-1",
        owner_id="@SUM(A1:A9)",
        errors=[pb.ImportError(field="name", reason='=HYPERLINK("http://evil","x")')],
        note="-2+3",
    )
    (cells,) = list(csv.reader(io.StringIO(_csv_line(_report_cells(row)).decode())))
    assert cells[0] == "7" and cells[1] == "kept"
    assert cells[3] == "'@SUM(A1:A9)"
    assert cells[5] == 'name: =HYPERLINK("http://evil","x")'  # starts with its field: not a formula
    assert cells[8] == "'-2+3"
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]

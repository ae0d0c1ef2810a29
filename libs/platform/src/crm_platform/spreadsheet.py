"""Cells of the CSV and XLSX files the system writes for people to open in a spreadsheet program.

A spreadsheet evaluates a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (and a leading tab or
carriage return can smuggle one past a naive check), so a customer named ``=HYPERLINK(...)`` or
``@SUM(...)`` in an export would run on the reader's machine. Following OWASP's "CSV injection" guidance, such a
text is written with a leading single quote, which every spreadsheet program shows as text. Only strings are
escaped: numbers, dates and empty cells are written as they are. One helper, used by every writer (the customer
service's import template, the gateway's import report), so a new export cannot forget a case.
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""The first characters that make a spreadsheet program read a text cell as a formula (OWASP)."""


def safe_cell(value: object) -> object:
    """``value`` as a cell a spreadsheet shows as text: a string starting like a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(values: Iterable[object]) -> list[object]:
    """Every cell of a row through :func:`safe_cell`."""
    return [safe_cell(value) for value in values]

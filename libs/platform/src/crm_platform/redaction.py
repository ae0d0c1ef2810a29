"""What a log line may say about a failure or a record: never personal data, never key material.

Logs go to shared aggregation that many people read and nobody erases on a customer's request, so two kinds of
value are kept out of them here, once, for every part that logs through :mod:`crm_platform.logging`:

* **Driver errors.** asyncpg's ``PostgresError``, SQLAlchemy's ``StatementError``/``DBAPIError`` and SQLite's
  errors carry the failed statement, its bound parameters and the server's ``DETAIL`` line (``Key
  (mobile_hash)=(…) already exists``), and some of their messages quote the offending value (``invalid input
  syntax for type uuid: "…"``). Such an error is described by its type, SQLSTATE, constraint and table only
  (:func:`describe_error`), wherever it sits in an exception chain (:func:`format_exception`); the traceback's
  frames stay, since they show code, not values.
* **Sensitive fields.** A record's extras, and dict values inside them, whose name says personal data or a
  secret (:func:`is_sensitive`) are replaced with ``"***"`` (:func:`redact`).

Text that a caller built itself from a driver error (``repr(exc)`` in an extra, an f-string message) is cut at
the markers of the parts that carry values (:func:`scrub_text`), as a last line of defence; call sites should
pass the exception, or :func:`describe_error` of it, instead.
"""

from __future__ import annotations

import re
import sqlite3
import traceback
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import StatementError

REDACTED = "***"

# Whole field names that hold personal data (the customer profile's personal facts, as the customer service's
# domain names them, and what the gateway keeps of its staff) or secrets.
SENSITIVE_NAMES = frozenset(
    {
        "id_number",
        "birth_date",
        "birthday",
        "contact_person",
        "family_situation",
        "annual_income",
        "investment_experience",
        "credit_code",
        "display_name",
        "full_name",
        "summary",
        "free_text",
        "body",
        "params",
        "parameters",
        "statement",
        "detail",
    }
)

# A field is also sensitive when one of the words of its name (split at ``_``, ``-`` and ``.``) is one of these:
# ``customer_name``, ``contact_mobile``, ``mobile_hash``, ``id_number_enc``, ``api_key``, ``refresh_token``.
SENSITIVE_WORDS = frozenset(
    {
        "name",
        "username",
        "mobile",
        "phone",
        "email",
        "address",
        "birth",
        "gender",
        "sex",
        "occupation",
        "employer",
        "password",
        "passwd",
        "pwd",
        "token",
        "secret",
        "key",
        "keys",
        "ciphertext",
        "enc",
        "hash",
        "otp",
        "totp",
        "cookie",
        "authorization",
        "credential",
        "credentials",
        "passport",
    }
)

# Names that contain a sensitive word but hold neither personal data nor a secret.
NOT_SENSITIVE = frozenset({"key_id", "kid", "active_key_id"})

_WORD_SPLIT = re.compile(r"[_\-.]")

# Where the value-carrying parts of a driver error's text begin (SQLAlchemy appends the statement and the
# parameters; asyncpg and libpq append the DETAIL line that quotes the conflicting key).
_VALUE_MARKERS = re.compile(r"(\\n|\n|\s)*(DETAIL:|\[SQL:|\[parameters:|Failing row contains)")

# SQLite's constraint messages name the table and columns only (``UNIQUE constraint failed: customers.mobile``).
_SQLITE_CONSTRAINT = re.compile(r"^(UNIQUE|NOT NULL|CHECK|FOREIGN KEY) constraint failed(: [\w., ]{1,200})?$")

_DRIVER_MODULES = ("asyncpg", "sqlite3", "aiosqlite", "psycopg", "psycopg2", "sqlalchemy.dialects")

# An exception chain longer than this is cut (a cycle cannot occur: each exception is visited once).
_MAX_CHAIN = 32


def is_sensitive(field: str) -> bool:
    """Whether a field called ``field`` may hold personal data or a secret (its value is never logged)."""
    name = field.lower()
    if name in NOT_SENSITIVE:
        return False
    return name in SENSITIVE_NAMES or any(word in SENSITIVE_WORDS for word in _WORD_SPLIT.split(name))


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with every sensitive key of every dict in it (also in lists and tuples) masked, exceptions
    described by :func:`describe_error`, and strings cut by :func:`scrub_text`."""
    if isinstance(value, BaseException):
        return describe_error(value)
    if isinstance(value, str):
        return scrub_text(value)
    if depth >= 8:  # deeper structures are not logged by anything we know; refuse rather than recurse unbounded
        return REDACTED if isinstance(value, Mapping | list | tuple | set) else value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_sensitive(k) else redact(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, tuple):
        return tuple(redact(item, depth + 1) for item in value)
    if isinstance(value, list | set | frozenset):
        return [redact(item, depth + 1) for item in value]
    return value


def scrub_text(text: str) -> str:
    """``text`` cut where the statement, parameters or DETAIL line of a driver error's text would begin."""
    match = _VALUE_MARKERS.search(text)
    return text if match is None else text[: match.start()] + " [redacted]"


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a database driver or wraps one (its text may carry statement values)."""
    if isinstance(exc, StatementError | sqlite3.Error):
        return True
    module = type(exc).__module__ or ""
    return any(module == root or module.startswith(root + ".") for root in _DRIVER_MODULES)


def describe_error(exc: BaseException) -> str:
    """One line naming ``exc`` for a log or a stored error: ``Type: message`` for an ordinary exception (its
    text cut by :func:`scrub_text`), and only the type, SQLSTATE, constraint and table for a driver error."""
    return f"{type(exc).__name__}: {error_text(exc)}"


def error_text(exc: BaseException) -> str:
    """What may be logged of ``exc``'s message: an ordinary exception's text cut by :func:`scrub_text`; for a
    driver error only its :func:`driver_facts` (``sqlstate=23505, constraint=…, table=…``)."""
    if not is_driver_error(exc):
        return scrub_text(str(exc))
    facts = driver_facts(exc)
    return ", ".join(f"{k}={v}" for k, v in facts.items()) or "driver error"


def driver_facts(exc: BaseException) -> dict[str, str]:
    """The facts of a driver error that hold no values: SQLSTATE (or SQLite's error name), constraint, table,
    and for a SQLAlchemy error the driver error it wraps (found through ``orig`` and the exception chain)."""
    facts: dict[str, str] = {}
    for error in _driver_errors(exc):
        for fact, attributes in (
            ("sqlstate", ("sqlstate", "pgcode")),
            ("sqlite_error", ("sqlite_errorname",)),
            ("constraint", ("constraint_name",)),
            ("table", ("table_name",)),
        ):
            if fact not in facts:
                value = next((getattr(error, a, None) for a in attributes if getattr(error, a, None)), None)
                if isinstance(value, str) and value:
                    facts[fact] = value
        if isinstance(error, sqlite3.Error) and "constraint" not in facts:
            match = _SQLITE_CONSTRAINT.match(str(error))
            if match is not None:
                facts["constraint"] = match.group(0)
        if "driver" not in facts and error is not exc and not isinstance(error, StatementError):
            facts["driver"] = type(error).__name__
    order = ("sqlstate", "sqlite_error", "constraint", "table", "driver")
    return {fact: facts[fact] for fact in order if fact in facts}


def _driver_errors(exc: BaseException) -> list[BaseException]:
    """``exc`` and the driver errors it wraps: SQLAlchemy's ``orig``, then each one's cause and context."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(found) < _MAX_CHAIN:
        error = pending.pop(0)
        if error is None or any(error is seen for seen in found) or not is_driver_error(error):
            continue
        found.append(error)
        orig = getattr(error, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, error.__cause__, error.__context__])
    return found


def format_exception(exc: BaseException) -> str:
    """``exc``'s traceback as Python prints it, chain included (causes and contexts first, group members after),
    except that each exception's text is :func:`describe_error`'s: a driver error's statement, parameters and
    DETAIL line never appear."""
    out: list[str] = []
    _format_chain(exc, out, [])
    return "".join(out).rstrip("\n")


def _format_chain(exc: BaseException, out: list[str], seen: list[BaseException]) -> None:
    seen.append(exc)
    if len(seen) > _MAX_CHAIN:
        out.append("[exception chain cut]\n")
        return
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and not any(cause is s for s in seen):
        _format_chain(cause, out, seen)
        out.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and not any(context is s for s in seen):
        _format_chain(context, out, seen)
        out.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if exc.__traceback__ is not None:
        out.append("Traceback (most recent call last):\n")
        out.extend(traceback.format_tb(exc.__traceback__))
    kind = type(exc)
    qualified = (
        kind.__qualname__ if kind.__module__ in {"builtins", "__main__"} else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = error_text(exc)
    out.append(f"{qualified}: {text}\n" if text else f"{qualified}\n")
    if not is_driver_error(exc):
        for note in getattr(exc, "__notes__", None) or ():
            out.append(scrub_text(str(note)) + "\n")
    members = getattr(exc, "exceptions", None)
    if isinstance(exc, BaseExceptionGroup) and members:
        for number, member in enumerate(members, 1):
            out.append(f"+---------------- {number} ----------------\n")
            _format_chain(member, out, seen)

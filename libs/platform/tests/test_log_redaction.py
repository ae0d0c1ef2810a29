"""No personal data and no key material in any log line (issue 29, point 3).

Each kind of failure that used to put personal values into a log is provoked here with seeded values, on the
real databases and a real gRPC server, and every JSON line the shared formatter writes is searched for them (and
for their hex and hashes): a unique violation on SQLite and on PostgreSQL (through SQLAlchemy and through raw
asyncpg), a statement error quoting its bound parameters, an unhandled error in a gRPC method whose request
carries a name and an ID number, a log call with sensitive extras. Each test first shows that the unfiltered
text *does* hold the value, so it fails if the formatter stops reducing it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table, UniqueConstraint, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm_platform.db import create_engine, is_postgres, normalise_url
from crm_platform.fastread import ReadPool, asyncpg_dsn
from crm_platform.grpc_client import call_metadata
from crm_platform.grpc_server import create_server, declare_permissions
from crm_platform.logging import JsonFormatter
from crm_platform.redaction import describe_error, is_sensitive
from crm_testing.nats_server import free_port
from crm_testing.services import identity

NAME = "欧阳静怡"
ID_NUMBER = "11010519880314417X"
MOBILE = "13912345678"
BIRTH = "1988-03-14"
CIPHERTEXT = bytes.fromhex("01a3f5c7e9")
MOBILE_HASH = hashlib.sha256(f"mobile:{MOBILE}".encode()).hexdigest()
SECRET = "s3cr3t-internal-signing-key"
SEEDED = {
    "name": NAME,
    "id_number": ID_NUMBER,
    "mobile": MOBILE,
    "birth_date": BIRTH,
    "mobile_hash": MOBILE_HASH,
    "ciphertext_hex": CIPHERTEXT.hex(),
    "secret": SECRET,
}

log = logging.getLogger("crm.test.redaction")


class Lines:
    """The JSON lines the shared formatter wrote while a test ran (a handler on the root logger)."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def records(self) -> list[dict[str, Any]]:
        """Every line, parsed (each must be one JSON object)."""
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line.strip()]

    def leaks(self) -> list[str]:
        """The seeded values (raw, JSON-escaped, or as Python would quote bytes) found in any line."""
        text_ = self._stream.getvalue()
        decoded = "\n".join(json.dumps(r, ensure_ascii=False) for r in self.records())
        found = []
        for label, value in SEEDED.items():
            forms = {value, json.dumps(value)[1:-1], value.upper()}
            if label == "ciphertext_hex":
                forms |= {repr(CIPHERTEXT), "\\x" + value}
            found += [f"{label} ({form!r})" for form in forms if form in text_ or form in decoded]
        return found


@pytest.fixture
def lines() -> Iterator[Lines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield Lines(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


metadata = MetaData()
people = Table(
    "people",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100)),
    Column("id_number_enc", LargeBinary),
    Column("mobile_hash", String(64)),
    Column("born_at", DateTime),
    UniqueConstraint("mobile_hash", name="uq_people_mobile_hash"),
)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(normalise_url(db_url))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


def _log_every_way(exc: BaseException, *, built_text: bool = True) -> None:
    """Log ``exc`` the ways the code base does: with its traceback, as a message argument, as an extra, and (with
    ``built_text``) as text the caller built from it (``repr`` in an extra, an f-string message), which can only be
    cut at the markers of SQLAlchemy's text: a raw driver error's own text is beyond any formatter's reach, which
    is why call sites log the exception or ``describe_error`` of it."""
    try:
        raise RuntimeError("import batch failed") from exc
    except RuntimeError:
        log.exception("unhandled error in %s", "/crm.test/Write", extra={"error": describe_error(exc)})
    log.error("write failed: %s", exc, extra={"cause": exc})
    if built_text:
        log.warning(f"statistics refresh failed: {exc}", extra={"error": repr(exc)})


async def test_a_unique_violation_logs_its_sqlstate_and_constraint_never_the_values(
    engine: AsyncEngine, lines: Lines
) -> None:
    row = {"name": NAME, "id_number_enc": CIPHERTEXT, "mobile_hash": MOBILE_HASH}
    async with engine.begin() as conn:
        await conn.execute(insert(people).values(id=1, **row))
    with pytest.raises(IntegrityError) as caught:
        async with engine.begin() as conn:
            await conn.execute(insert(people).values(id=2, **row))
    if is_postgres(engine):
        assert MOBILE_HASH in caught.value.orig.detail  # type: ignore[union-attr]  # DETAIL quotes the key
    _log_every_way(caught.value)

    assert lines.leaks() == []
    records = [r for r in lines.records() if r["logger"] == log.name]
    assert len(records) == 3 and "RuntimeError: import batch failed" in records[0]["exc"]
    expected = "sqlstate=23505" if is_postgres(engine) else "sqlite_error=SQLITE_CONSTRAINT_UNIQUE"
    for record in records[:2]:
        assert expected in json.dumps(record), record
    assert records[2]["msg"].endswith("[redacted]")  # a caller's own f-string is cut before the statement
    if is_postgres(engine):
        assert "constraint=uq_people_mobile_hash" in records[0]["exc"] and "table=people" in records[1]["msg"]
    else:
        assert "people.mobile_hash" in records[1]["msg"]


@pytest.mark.postgres
async def test_raw_asyncpg_errors_log_their_sqlstate_never_the_values(postgres_url: str, lines: Lines) -> None:
    engine = create_engine(normalise_url(postgres_url))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    dsn = asyncpg_dsn(engine.url)
    assert dsn is not None
    pool = ReadPool(dsn, size=1)
    await pool.open()
    try:
        statement = "INSERT INTO people (id, name, mobile_hash) VALUES ($1, $2, $3) RETURNING id"
        await pool.fetchrow(statement, [1, NAME, MOBILE_HASH])
        failures: list[BaseException] = []
        for sql, args in (
            (statement, [2, NAME, MOBILE_HASH]),  # unique violation: DETAIL quotes the hash
            ("SELECT $1::text::uuid", [ID_NUMBER]),  # the server quotes the bad value in its message
            ("SELECT $1::int", [MOBILE]),  # the driver quotes the bad argument in its own error
        ):
            with pytest.raises(Exception) as caught:
                await pool.fetchrow(sql, args)
            failures.append(caught.value)
    finally:
        await pool.close()
        await engine.dispose()
    unique, syntax, argument = failures
    assert MOBILE_HASH in unique.detail and ID_NUMBER in str(syntax) and MOBILE in str(argument)
    for failure in failures:
        _log_every_way(failure, built_text=False)

    assert lines.leaks() == []
    messages = [r["msg"] for r in lines.records() if r["logger"] == log.name]
    assert any("sqlstate=23505" in m and "constraint=uq_people_mobile_hash" in m for m in messages), messages
    assert any("sqlstate=22P02" in m for m in messages), messages
    assert any(type(argument).__name__ in m for m in messages), messages


async def test_a_statement_error_never_logs_its_bound_parameters(tmp_path: Any, lines: Lines) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'raw.db'}"
    # A bare engine (no hide_parameters) puts the bound values into the error's text: the formatter alone must
    # keep them out. Every engine of ours hides them in the first place.
    bare = create_async_engine(url)
    ours = create_engine(make_url(url))
    row = {"id": 1, "name": NAME, "id_number_enc": CIPHERTEXT, "mobile_hash": MOBILE_HASH}
    errors: list[StatementError] = []
    try:
        async with bare.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(people).values(**row))
        for engine in (bare, ours):
            with pytest.raises(IntegrityError) as duplicate:
                async with engine.begin() as conn:
                    await conn.execute(insert(people).values(**row))
            errors.append(duplicate.value)
        with pytest.raises(StatementError) as unbindable:
            async with bare.begin() as conn:  # DateTime on SQLite refuses a string, before the driver sees it
                await conn.execute(insert(people).values(id=3, name=NAME, born_at=f"{BIRTH} {ID_NUMBER}"))
        errors.append(unbindable.value)
    finally:
        await bare.dispose()
        await ours.dispose()
    from_bare, from_ours, _ = errors
    assert NAME in str(from_bare) and MOBILE_HASH in str(from_bare)  # SQLAlchemy's default text
    assert NAME not in str(from_ours) and "parameters hidden" in str(from_ours)
    assert ours.sync_engine.hide_parameters
    for error in errors:
        _log_every_way(error)

    assert lines.leaks() == []
    messages = [r["msg"] for r in lines.records() if r["logger"] == log.name]
    assert messages[1].startswith("write failed: IntegrityError: sqlite_error=SQLITE_CONSTRAINT_")
    assert messages[-2] == "write failed: StatementError: driver error"  # not even the TypeError's text


class _WritingServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    """CreateCustomer writes the request's personal values to a table with a unique lookup hash, letting the
    driver's error escape (a bug of the kind the interceptor's last-resort handler logs)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def CreateCustomer(self, request: Any, context: Any) -> Any:
        digest = hashlib.sha256(f"mobile:{request.profile.mobile}".encode()).hexdigest()
        async with self._engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO people (name, id_number_enc, mobile_hash) VALUES (:n, :i, :h)"),
                {"n": request.name, "i": request.profile.id_number.encode(), "h": digest},
            )
        return customer_service_pb2.CreateCustomerResponse()


@pytest.mark.postgres
async def test_an_unhandled_error_in_a_grpc_method_logs_no_request_values(postgres_url: str, lines: Lines) -> None:
    engine = create_engine(normalise_url(postgres_url))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    service = customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"]
    declare_permissions(service, {"CreateCustomer": "customer:create"})  # as the customer service declares it
    server = create_server("customer", SECRET)
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(_WritingServicer(engine), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    request = customer_service_pb2.CreateCustomerRequest(
        name=NAME,
        request_id="r1",
        profile=customer_pb2.CustomerProfile(id_number=ID_NUMBER, mobile=MOBILE, birth_date=BIRTH),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
            await stub.CreateCustomer(request, metadata=call_metadata(identity(), SECRET), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateCustomer(request, metadata=call_metadata(identity(), SECRET), timeout=10)
    finally:
        await server.stop(None)
        await engine.dispose()
    assert caught.value.code() is grpc.StatusCode.INTERNAL and caught.value.details() == "internal error"

    assert lines.leaks() == []
    failures = [r for r in lines.records() if r["msg"].startswith("unhandled error in")]
    assert len(failures) == 1 and failures[0]["msg"].endswith("/crm.customer.v1.CustomerService/CreateCustomer")
    assert "sqlstate=23505" in failures[0]["exc"] and "constraint=uq_people_mobile_hash" in failures[0]["exc"]
    assert failures[0]["error"].startswith("IntegrityError: sqlstate=23505")
    assert "in CreateCustomer" in failures[0]["exc"]  # the frames stay


def test_sensitive_extras_and_arguments_are_masked_and_the_rest_kept(lines: Lines) -> None:
    customer = {
        "customer_id": "c-1",
        "name": NAME,
        "profile": {"id_number": ID_NUMBER, "birth_date": BIRTH, "contacts": [{"mobile": MOBILE}]},
        "mobile_hash": MOBILE_HASH,
        "id_number_enc": CIPHERTEXT,
    }
    log.warning(
        "customer %s refused: %s",
        "c-1",
        customer,
        extra={
            "customer": customer,
            "customer_name": NAME,
            "password": SECRET,
            "api_key": SECRET,
            "refresh_token": SECRET,
            "internal_secret": SECRET,
            "key_id": "k1",
            "event_id": "e-1",
        },
    )
    log.info("login refused for %(username)s from %(client)s", {"username": NAME, "client": "10.0.0.1"})

    assert lines.leaks() == []
    first, second = lines.records()
    assert first["customer"]["customer_id"] == "c-1" and first["customer"]["name"] == "***"
    profile = first["customer"]["profile"]
    assert (profile["id_number"], profile["birth_date"], profile["contacts"]) == ("***", "***", [{"mobile": "***"}])
    assert first["customer_name"] == "***" and first["password"] == first["api_key"] == "***"
    assert (first["key_id"], first["event_id"]) == ("k1", "e-1")
    assert "'customer_id': 'c-1'" in first["msg"] and "'***'" in first["msg"]
    assert second["msg"] == "login refused for *** from 10.0.0.1"


@pytest.mark.parametrize(
    ("field", "sensitive"),
    [
        ("name", True),
        ("contact_mobile", True),
        ("id_number", True),
        ("id_number_enc", True),
        ("mobile_hash", True),
        ("birth_date", True),
        ("email", True),
        ("address", True),
        ("password", True),
        ("access_token", True),
        ("master_keys", True),
        ("ciphertext", True),
        ("customer_id", False),
        ("request_id", False),
        ("key_id", False),
        ("import_id", False),
        ("consumer", False),
        ("status", False),
    ],
)
def test_which_field_names_are_sensitive(field: str, sensitive: bool) -> None:
    assert is_sensitive(field) is sensitive

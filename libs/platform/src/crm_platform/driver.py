"""The asyncpg connection beneath an SQLAlchemy one, for the event hot paths on PostgreSQL.

The outbox relay and the consumers' bookkeeping run a handful of fixed statements many times a second. Through
SQLAlchemy each costs a statement compile-cache lookup, parameter processing, result wrapping and a greenlet
switch; through the driver it is one prepared statement (asyncpg caches them per connection). Measured on the
relay: the SQLAlchemy fetch-and-mark was a fifth of its time. The connection still comes from the engine's
pool, so pool size, recycling and metrics stay in one place; a connection that breaks under the driver is
invalidated so the pool does not hand it out again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def driver_of(conn: AsyncConnection) -> Any:
    """The asyncpg connection of ``conn`` (which must be on PostgreSQL)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


@contextlib.contextmanager
def integrity_as_sqlalchemy(statement: str) -> Iterator[None]:
    """Raise a constraint violation reported by the driver (a unique index, a foreign key) as SQLAlchemy's
    ``IntegrityError``, as the same statement through a session would, so that a caller handles one exception
    whichever path wrote. ``statement`` names what was written, for the message."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(statement, None, exc) from exc


async def driver_in_transaction(conn: AsyncConnection) -> Any | None:
    """The asyncpg connection of ``conn`` when its transaction has begun on the server, else ``None``.

    SQLAlchemy's asyncpg adapter sends ``BEGIN`` with the first statement of a transaction, not at
    ``begin()``; a statement sent to the driver before that would commit on its own. Callers fall back to
    SQLAlchemy (which begins the transaction) when this returns ``None``.
    """
    driver = await driver_of(conn)
    return driver if driver.is_in_transaction() else None


@contextlib.asynccontextmanager
async def pooled_driver(engine: AsyncEngine) -> AsyncIterator[Any]:
    """An asyncpg connection checked out of ``engine``'s pool for the block (no transaction open).

    SQLAlchemy issues nothing on it (its reset on check-in is a no-op when it began no transaction); the
    caller opens its own with ``driver.transaction()`` or runs autocommit statements.
    """
    async with pooled_connection(engine) as (_, driver):
        yield driver


@contextlib.asynccontextmanager
async def pooled_connection(
    engine: AsyncEngine, *, autocommit: bool = False
) -> AsyncIterator[tuple[AsyncConnection, Any]]:
    """A pooled SQLAlchemy connection and its asyncpg connection, for a transaction the caller runs on the
    driver while SQLAlchemy (a session bound to the connection) executes inside it.

    With ``autocommit`` SQLAlchemy begins and commits nothing itself on this connection (its ``BEGIN`` would
    otherwise go out with its first statement, and its ``COMMIT`` with the session's); its savepoints
    still work inside the caller's transaction. The isolation level returns to the default when the
    connection goes back to the pool.
    """
    async with engine.connect() as conn:
        if autocommit:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        driver = await driver_of(conn)
        try:
            yield conn, driver
        except BaseException:
            # A broken or half-used connection (a timeout mid-statement) must not go back to the pool.
            if driver.is_closed() or driver.is_in_transaction():
                await conn.invalidate()
            raise


class HeldConnection:
    """A pooled connection (autocommit, as :func:`pooled_connection`) that a sequential loop keeps between its
    transactions, instead of checking one out and in, and setting its isolation level, every time (measured:
    about a quarter of a consumer's CPU per batch at a steady trickle). It holds one slot of the pool until
    :meth:`close`; a connection that breaks is invalidated and replaced on the next use. A second user while
    it is in use gets a connection of its own from the pool.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._busy = False

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[tuple[AsyncConnection, Any]]:
        """The held connection and its driver for one transaction run by the caller on the driver."""
        if self._busy:
            async with pooled_connection(self._engine, autocommit=True) as pair:
                yield pair
            return
        self._busy = True
        try:
            if self._conn is None or self._driver.is_closed():
                await self.close()
                conn = await self._engine.connect()
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                self._conn, self._driver = conn, await driver_of(conn)
            try:
                yield self._conn, self._driver
            except BaseException:
                if self._driver.is_closed() or self._driver.is_in_transaction():
                    with contextlib.suppress(Exception):
                        await self._conn.invalidate()
                    await self.close()
                raise
        finally:
            self._busy = False

    async def close(self) -> None:
        """Give the connection back to the pool (or drop it, when it was invalidated)."""
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection is best effort
                await conn.close()

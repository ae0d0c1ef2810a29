"""Hot reads straight through asyncpg, beside SQLAlchemy (which keeps the schema, migrations, writes and the
ordinary queries).

Why: a read by primary key through SQLAlchemy's async session costs an implicit ``BEGIN``, statement
compilation and cache-key generation, a ``ROLLBACK`` on close and a greenlet switch per step — measured in
the customer service at several times the cost of the query itself (issue #3: ~1,600 req/s through
SQLAlchemy's async Core against ~2,850 req/s through asyncpg for the same path). A :class:`ReadPool` runs one
prepared statement per call in autocommit on a pool of its own; asyncpg prepares each distinct SQL text once
per connection and reuses it.

Only PostgreSQL has such a path: on SQLite (the embedded default of ``make run``) :func:`read_pool_for`
answers ``None`` and the caller keeps its SQLAlchemy query.

The data scope must be applied *in* the query, exactly as :func:`crm_platform.scope.scope_condition` does for
SQLAlchemy; :func:`scope_sql` is that rule as SQL text with bind parameters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_platform.auth_context import Identity, Scope
from crm_platform.metrics import DB_POOL_IN_USE

log = logging.getLogger(__name__)


def scope_sql(identity: Identity, params: list[Any], *, owner: str, team: str, branch: str, region: str) -> str:
    """The SQL condition keeping only rows in ``identity``'s scope; appends its bind values to ``params``.

    Column arguments are trusted SQL expressions (column names written by the caller, never user input).
    Identical in meaning to :func:`crm_platform.scope.scope_condition`: an identity lacking the attribute its
    scope needs sees nothing rather than everything.
    """
    match identity.scope:
        case Scope.ALL:
            return "TRUE"
        case Scope.REGION if identity.region:
            column, value = region, identity.region
        case Scope.BRANCH if identity.branch_id:
            column, value = branch, identity.branch_id
        case Scope.TEAM if identity.team_id:
            column, value = team, identity.team_id
        case Scope.OWN if identity.user_id:
            column, value = owner, identity.user_id
        case _:
            return "FALSE"
    params.append(value)
    return f"{column} = ${len(params)}"


def asyncpg_dsn(url: URL) -> str | None:
    """The libpq-style DSN asyncpg takes for a PostgreSQL ``url``; ``None`` for any other database."""
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class ReadPool:
    """A fixed set of asyncpg connections for hot single statements, in autocommit.

    Not ``asyncpg.Pool``: its acquire/release bookkeeping and the reset query it sends on every release
    (``RESET ALL``, ``UNLISTEN *``, … — one more round trip per call) measured at two to three times the cost
    of the query itself on a primary-key read. These connections only ever run single statements — reads, or a
    data-modifying ``WITH`` statement that PostgreSQL runs atomically on its own (the customer create) — so
    there is no session state to reset: a connection is handed out, runs one statement, and is handed back.
    A connection that failed or whose call was cancelled mid-statement is closed and replaced in the
    background (reconnecting with back-off while the database is down); calls wait for a free connection,
    bounded by their own deadline.

    Run :meth:`serve` as a background task (it connects, then closes everything when cancelled), or call
    :meth:`open` and :meth:`close`.
    """

    def __init__(self, dsn: str, *, size: int = 4, name: str = "crm-fastread") -> None:
        self._dsn = dsn
        self._size = max(1, size)
        self._name = name
        self._idle: list[Any] = []
        self._busy: set[Any] = set()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reconnects: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _connect(self) -> Any:
        import asyncpg  # local: only PostgreSQL deployments need it

        return await asyncpg.connect(self._dsn, server_settings={"application_name": self._name})

    async def open(self) -> None:
        """Connect every connection (raises when the database cannot be reached)."""
        self._closed = False
        missing = self._size - len(self._idle) - len(self._busy) - len(self._reconnects)
        for connection in await asyncio.gather(*(self._connect() for _ in range(missing))):
            self._checkin(connection)

    async def close(self) -> None:
        """Stop reconnecting and close every connection (those in use are closed when handed back)."""
        self._closed = True
        for task in list(self._reconnects):
            task.cancel()
        idle, self._idle = self._idle, []
        for connection in idle:
            try:
                await asyncio.wait_for(connection.close(), 2)
            except (OSError, TimeoutError):
                connection.terminate()
        while self._waiters:
            self._waiters.popleft().cancel()

    async def serve(self) -> None:
        """Open (retrying while the database is unreachable), then hold the connections until cancelled (a
        service's background task); close them on the way out. Calls wait meanwhile, bounded by their deadline.
        """
        try:
            while True:
                try:
                    await self.open()
                    break
                except Exception:  # unreachable, starting up, refusing: all retried
                    log.warning("read pool cannot connect yet; retrying", exc_info=True)
                    await asyncio.sleep(1.0)
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.close())

    async def fetchrow(self, sql: str, args: Sequence[Any], timeout: float | None = None) -> Any:
        """The first row of ``sql`` with ``args`` (an ``asyncpg.Record``: ``row["column"]``), or ``None``."""
        return await self._run("fetchrow", sql, args, timeout)

    async def fetch(self, sql: str, args: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Every row of ``sql`` with ``args`` (``asyncpg.Record`` objects)."""
        rows: list[Any] = await self._run("fetch", sql, args, timeout)
        return rows

    async def _run(self, method: str, sql: str, args: Sequence[Any], timeout: float | None) -> Any:
        connection = self._idle.pop() if self._idle else await self._wait()
        self._busy.add(connection)
        DB_POOL_IN_USE.inc()
        healthy = False
        try:
            answer = await getattr(connection, method)(sql, *args, timeout=timeout)
            healthy = True
            return answer
        except Exception as exc:
            # A query error (e.g. a statement the server rejects) leaves the connection usable; anything else
            # (network, timeout, protocol) does not, as far as we can tell.
            healthy = _is_query_error(exc) and not connection.is_closed()
            raise
        finally:
            DB_POOL_IN_USE.dec()
            self._busy.discard(connection)
            if healthy:
                self._checkin(connection)
            else:  # includes a call cancelled mid-statement: start afresh rather than trust the protocol state
                self._replace(connection)

    async def _wait(self) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._checkin(waiter.result())  # handed to us just as we gave up: pass it on
            raise

    def _checkin(self, connection: Any) -> None:
        if self._closed:
            connection.terminate()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _replace(self, connection: Any) -> None:
        loop = asyncio.get_running_loop()
        for job in (self._discard(connection), None if self._closed else self._reconnect()):
            if job is not None:
                task = loop.create_task(job)
                self._reconnects.add(task)
                task.add_done_callback(self._reconnects.discard)

    @staticmethod
    async def _discard(connection: Any) -> None:
        # close() first lets asyncpg finish cancelling a statement in progress (terminating mid-operation
        # fails); a connection that cannot even be closed is torn down.
        try:
            await asyncio.wait_for(connection.close(), 2)
        except Exception:  # whatever state it is in, it is being dropped
            log.debug("read pool connection torn down", exc_info=True)
            with contextlib.suppress(Exception):
                connection.terminate()

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                connection = await self._connect()
            except Exception:  # the database is down or restarting: retry with back-off
                log.warning("read pool reconnect failed; retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._checkin(connection)
            return


def _is_query_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.exceptions.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError
    )


def read_pool_for(engine: AsyncEngine, *, size: int = 4, name: str = "crm-fastread") -> ReadPool | None:
    """A :class:`ReadPool` on the database of ``engine`` when it is PostgreSQL; ``None`` otherwise (SQLite)."""
    dsn = asyncpg_dsn(engine.url)
    if dsn is None:
        return None
    return ReadPool(dsn, size=size, name=name)

"""A workaround for a grpcio asyncio client bug that turns a server's refusal of a streamed upload into
``INTERNAL: Internal error from Core``.

When a server ends a client-streaming call early (the customer service refuses an import file while it still
streams in), a write the client had in flight fails, and grpcio's ``_StreamRequestMixin._write`` then sets an
internal error unconditionally — overwriting the status the server had already delivered (grpc/grpc#36066; the
upstream fix is proposed in grpc/grpc#43486). The caller, and behind the gateway the user, then saw a 502
instead of the 422 naming what is wrong with the file.

:func:`install` replaces that one method with one that keeps a status already delivered and otherwise behaves
as before. It applies only to the grpcio versions it was checked against (``constraints.txt``), so an upgrade
that changes the internals leaves grpcio untouched; ``services/customer/tests/test_imports.py`` (a bad header
refused while the file still streams) shows whether the bug is back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc import _common
from grpc._cython import cygrpc
from grpc.aio import _call

CHECKED_VERSIONS = frozenset({"1.85.1"})


async def _write_keeping_status(self: Any, request: Any) -> None:
    if self.done():
        raise asyncio.InvalidStateError(_call._RPC_ALREADY_FINISHED_DETAILS)
    if self._done_writing_flag:
        raise asyncio.InvalidStateError(_call._RPC_HALF_CLOSED_DETAILS)
    if not self._metadata_sent.is_set():
        await self._metadata_sent.wait()
        if self.done():
            await self._raise_for_status()
    serialized = _common.serialize(request, self._request_serializer)
    try:
        await self._cython_call.send_serialized_message(serialized)
    except cygrpc.InternalError as err:
        # The fix: only when the server has not ended the call already is the failed write the call's status.
        if not self._cython_call.done():
            self._cython_call.set_internal_error(str(err))
        await self._raise_for_status()
    except asyncio.CancelledError:
        if not self.cancelled():
            self.cancel()
        raise


def install() -> bool:
    """Install the workaround (idempotent); False when this grpcio version is not one it was checked against."""
    if grpc.__version__ not in CHECKED_VERSIONS:
        return False
    _call._StreamRequestMixin._write = _write_keeping_status
    return True

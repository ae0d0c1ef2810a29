"""The shape every typed client shares: one channel, the signed identity and trace context on every call, a
deadline on every call, and retries on ``UNAVAILABLE`` for idempotent calls only.

A call that fails raises :class:`CallFailed` with the service's rich status decoded (reason, field violations),
which each edge maps once: the gateway to problem details, a service to its own domain error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import grpc

from crm_platform.grpc_client import RpcFailure, call_metadata, parse_failure

R = TypeVar("R")

# Back-off before the second and third attempt of an idempotent call whose service was unavailable (a replica
# restarting, a connection the mesh just closed); the call's deadline bounds the attempts together.
_RETRY_DELAYS = (0.05, 0.25)


class CallFailed(Exception):
    """A service answered a call with an error status (or could not be reached)."""

    def __init__(self, service: str, failure: RpcFailure) -> None:
        super().__init__(f"{service}: {failure.code.name} {failure.message}")
        self.service = service
        self.failure = failure

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code of the failure."""
        return self.failure.code


class ServiceClient:
    """Base of the typed clients: subclasses name the service and wrap each RPC in a method of its own."""

    service: ClassVar[str]
    stub_class: ClassVar[type[Any]]

    def __init__(self, channel: grpc.aio.Channel, secret: str, *, timeout: float = 5.0) -> None:
        self._stub = self.stub_class(channel)
        self._secret = secret
        self._timeout = timeout

    async def _unary(
        self, method: str, request: Any, identity: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        """Call ``method`` as ``identity`` within ``timeout`` (the client's default when None); an idempotent call
        is tried again when the service is unavailable, within the same deadline."""
        rpc: Callable[..., Awaitable[Any]] = getattr(self._stub, method)
        deadline = time.monotonic() + (timeout or self._timeout)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                # Fresh metadata per attempt: a signed identity is good for one call (servers refuse replays).
                return await rpc(request, metadata=call_metadata(identity, self._secret), timeout=max(remaining, 0.01))
            except grpc.aio.AioRpcError as exc:
                retry = (
                    idempotent
                    and exc.code() is grpc.StatusCode.UNAVAILABLE
                    and attempt < len(_RETRY_DELAYS)
                    and deadline - time.monotonic() > _RETRY_DELAYS[attempt]
                )
                if not retry:
                    raise CallFailed(self.service, parse_failure(exc)) from None
                await asyncio.sleep(_RETRY_DELAYS[attempt])
                attempt += 1

    async def _stream_in(self, method: str, requests: AsyncIterator[Any], identity: Any, *, timeout: float) -> Any:
        """A client-streaming call (never retried: the stream cannot be replayed)."""
        rpc: Callable[..., Awaitable[Any]] = getattr(self._stub, method)
        try:
            return await rpc(requests, metadata=call_metadata(identity, self._secret), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(self.service, parse_failure(exc)) from None

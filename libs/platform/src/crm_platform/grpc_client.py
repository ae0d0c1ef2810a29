"""gRPC client side: channels, the signed identity and trace metadata on every call, and rich-error parsing."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

from crm_platform import grpc_fixes, telemetry
from crm_platform.auth_context import Identity
from crm_platform.errors import FieldViolation

# Every client of ours streams through grpcio's asyncio client: keep a server's early refusal of an upload.
grpc_fixes.install()

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    # Spread calls over every replica behind a headless Service (DNS gives all pod addresses).
    ("grpc.lb_policy_name", "round_robin"),
]


def insecure_channel(target: str) -> grpc.aio.Channel:
    """An aio channel to ``target`` (host:port) with keep-alive; TLS is terminated by the mesh in a cluster."""
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)


def call_metadata(identity: Identity, secret: str) -> list[tuple[str, str]]:
    """Signed identity plus the current trace context, for one outgoing call."""
    metadata = identity.to_metadata(secret)
    metadata.extend(telemetry.inject({}).items())
    return metadata


@dataclass(frozen=True)
class RpcFailure:
    """A failed call's status as the caller needs it to answer its own client."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def parse_failure(exc: grpc.aio.AioRpcError) -> RpcFailure:
    """Decode the rich status (ErrorInfo, BadRequest) a CRM service attached to an error."""
    reason = ""
    violations: list[FieldViolation] = []
    extra: dict[str, str] = {}
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                extra.update(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return RpcFailure(exc.code(), exc.details() or "", reason, violations, extra)

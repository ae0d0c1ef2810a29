"""gRPC server bootstrap: one interceptor for identity, permissions, input text checks, deadlines, tracing, metrics
and error mapping, plus the standard health and reflection services.

Every method a service serves declares the permission it needs (:func:`declare_permissions`, next to its
servicer); the server refuses to start with a method undeclared (:func:`undeclared_methods`). The interceptor
refuses a caller without that permission, and binds the caller's identity *acting as* it — in the scope the
policy gives that permission — so the store's scope rule applies the right scope whoever called.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import trace

from crm_platform import errors, metrics, telemetry
from crm_platform.auth_context import Identity, ReplayGuard, reset_identity, set_identity
from crm_platform.policy import Policy, default_policy
from crm_platform.redaction import describe_error
from crm_platform.validation import require_valid_message

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

_UNGUARDED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

# "/<package>.<Service>/<Method>" → the permission the method needs.
_METHOD_PERMISSIONS: dict[str, str] = {}


def declare_permissions(service: Any, permissions: Mapping[str, str]) -> None:
    """Declare the permission each method of ``service`` (a protobuf ``ServiceDescriptor``) needs."""
    names = {m.name for m in service.methods}
    unknown = set(permissions) - names
    if unknown:
        raise ValueError(f"{service.full_name} has no method(s) {', '.join(sorted(unknown))}")
    for method, permission in permissions.items():
        _METHOD_PERMISSIONS[f"/{service.full_name}/{method}"] = permission


def method_permission(method: str) -> str | None:
    """The permission declared for ``/<package>.<Service>/<Method>``."""
    return _METHOD_PERMISSIONS.get(method)


def undeclared_methods(service: Any) -> list[str]:
    """The methods of ``service`` (a ``ServiceDescriptor``) that declare no permission."""
    return [m.name for m in service.methods if f"/{service.full_name}/{m.name}" not in _METHOD_PERMISSIONS]


def require_declared_permissions(service_names: Sequence[str]) -> None:
    """Refuse to start a server with a method that declares no permission (like the gateway's routes)."""
    from google.protobuf import descriptor_pool

    missing = [
        f"{name}/{method}"
        for name in service_names
        for method in undeclared_methods(descriptor_pool.Default().FindServiceByName(name))
    ]
    if missing:
        raise RuntimeError(f"methods without a declared permission: {', '.join(missing)}")


# The signed identities this process accepted lately (one guard for every server and streaming method in it).
_REPLAYS = ReplayGuard()


def verify_caller(
    metadata: Sequence[tuple[str, Any]], secret: str, method: str, policy: Policy | None = None
) -> Identity:
    """The verified caller of ``method``, acting as its declared permission; raise when it is unsigned, stale,
    replayed, a service claiming more than the policy grants it, or lacks the permission."""
    identity = Identity.from_metadata(metadata, secret, replays=_REPLAYS)
    if identity.is_service and not (policy or default_policy()).admits_service(identity):
        raise errors.Unauthenticated(f"{identity.user_id} claims permissions the policy does not grant it")
    permission = method_permission(method)
    if permission is None:  # unreachable once the start-up check passed; fail closed anyway
        raise errors.PermissionDenied(f"{method} declares no permission")
    if not identity.has(permission):
        raise errors.PermissionDenied(f"requires permission {permission}")
    return identity.acting_as(permission)


_TRACE_KEYS = frozenset({"traceparent", "tracestate"})


def status_for(exc: errors.DomainError, domain: str) -> grpc.Status:
    """The rich gRPC status (google.rpc.Status with ErrorInfo and BadRequest details) of a domain error."""
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), grpc.StatusCode.FAILED_PRECONDITION)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=f"crm.{domain}")
    existing = getattr(exc, "existing_id", "")
    if existing:
        info.metadata["existing_id"] = existing
    details = [_pack(info)]
    if isinstance(exc, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        details.append(_pack(bad))
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    return rpc_status.to_status(status)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary method of the service's own servicers."""

    def __init__(self, domain: str, secret: str, default_deadline: float = 10.0, policy: Policy | None = None) -> None:
        self._domain = domain
        self._secret = secret
        self._default_deadline = default_deadline
        self._policy = policy or default_policy()
        # One wrapped handler per method, built on its first call: a method's handler never changes, and
        # building one per call (a closure and a handler object) was measurable on the hottest path.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Return the method's handler, wrapped unless it is health or reflection."""
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_UNGUARDED_PREFIXES) or handler.unary_unary is None:
            # Streaming methods are not wrapped: without a bound identity they fail closed in the domain.
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, behaviour: Callable[[Any, Any], Awaitable[Any]], method: str) -> Callable[[Any, Any], Any]:
        short = method.rsplit("/", 1)[-1]
        span_name = method.lstrip("/")
        attributes = {"rpc.system": "grpc", "rpc.method": short, "rpc.service": self._domain}
        latency = metrics.GRPC_LATENCY.labels(self._domain, short)
        counters: dict[grpc.StatusCode, Any] = {}  # prometheus children per code: labels() takes a lock per call

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            metadata: Sequence[tuple[str, Any]] = tuple(context.invocation_metadata() or ())
            carrier = {k: v for k, v in metadata if k in _TRACE_KEYS and isinstance(v, str)}
            status: grpc.Status | None = None
            code = grpc.StatusCode.OK
            with telemetry.request_span(_tracer, span_name, carrier, trace.SpanKind.SERVER, attributes) as span:
                token = None
                try:
                    identity = verify_caller(metadata, self._secret, method, self._policy)
                    token = set_identity(identity)
                    # Every string of every request is text before any domain rule or store sees it (issue 29).
                    require_valid_message(request)
                    if span.is_recording():
                        span.set_attribute("crm.user_id", identity.user_id)
                        if identity.on_behalf_of:
                            span.set_attribute("crm.on_behalf_of", identity.on_behalf_of)
                    if context.time_remaining() is not None:
                        # The caller set a deadline: gRPC itself cancels this task when it passes (no timer of ours
                        # per call; the caller sees DEADLINE_EXCEEDED, the metrics below too).
                        return await behaviour(request, context)
                    # No deadline from the caller: ours. asyncio.timeout, not wait_for (no extra task per call).
                    async with asyncio.timeout(self._default_deadline):
                        return await behaviour(request, context)
                except errors.DomainError as exc:
                    status = status_for(exc, self._domain)
                    code = status.code
                except TimeoutError:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    status = rpc_status.to_status(
                        status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="deadline exceeded")
                    )
                except asyncio.CancelledError:
                    remaining = context.time_remaining()
                    expired = remaining is not None and remaining <= 0
                    code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    # The request is never logged (it carries names and ID numbers); the shared formatter keeps a
                    # driver error's statement, parameters and DETAIL line out of the traceback too.
                    log.exception("unhandled error in %s", method, extra={"error": describe_error(exc)})
                    code = grpc.StatusCode.INTERNAL
                    status = rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))
                finally:
                    if token is not None:
                        reset_identity(token)
                    counter = counters.get(code)
                    if counter is None:
                        counter = counters[code] = metrics.GRPC_REQUESTS.labels(self._domain, short, code.name)
                    counter.inc()
                    latency.observe(time.perf_counter() - started)
                    if code is not grpc.StatusCode.OK:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            assert status is not None
            await context.abort(status.code, status.details, status.trailing_metadata)

        return wrapper


def create_server(domain: str, secret: str, default_deadline: float = 10.0) -> grpc.aio.Server:
    """A grpc.aio server with the CRM interceptor installed."""
    return grpc.aio.server(
        interceptors=[ServerInterceptor(domain, secret, default_deadline)],
        options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # Clients reconnect every few minutes, so new replicas of a scaled-out service get traffic.
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
    )


def add_health_and_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> health.aio.HealthServicer:
    """Register health (initially NOT_SERVING) and reflection for ``service_names``; return the health servicer."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, service_names: Sequence[str], serving: bool) -> None:
    """Mark the whole server and each service SERVING or NOT_SERVING."""
    state = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *service_names):
        await servicer.set(name, state)

"""Container health check: ``python -m crm_platform.healthcheck grpc HOST:PORT`` or ``... http URL``.

Exits 0 when the target reports healthy, 1 otherwise (for Docker HEALTHCHECK and scripts).
"""

from __future__ import annotations

import sys
import urllib.request


def check_grpc(target: str, timeout: float = 2.0) -> bool:
    """Whether the gRPC health service at ``target`` answers SERVING for the whole server."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def check_http(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - operator-given URL
            return 200 <= response.status < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring."""
    if len(argv) != 2 or argv[0] not in {"grpc", "http"}:
        print("usage: python -m crm_platform.healthcheck grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    healthy = check_grpc(argv[1]) if argv[0] == "grpc" else check_http(argv[1])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

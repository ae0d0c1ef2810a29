"""Token-bucket rate limits per caller and per client address (in this process).

Each gateway replica limits on its own, so the cluster-wide limit is the per-replica figure times the
replicas (a load balancer spreading a caller over N replicas lets N times the figure through); that bounds
abuse (password guessing, scraping) without a shared store on the request path. Lockout after failed logins is
kept in the database, so it holds across replicas whatever the rate limits let through.

The client address is the TCP peer, unless the peer is one of ``CRM_TRUSTED_PROXIES``: then it is the
right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries left of it were written by
the client and prove nothing). Without trusted proxies the header is ignored, so a client cannot pick its
own bucket — but behind a proxy that is not listed, every caller shares the proxy's bucket.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from crm_platform.errors import DomainError


class RateLimited(DomainError):
    """Too many requests; ``retry_after`` seconds until the next one is allowed."""

    reason = "RATE_LIMITED"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many requests; slow down")
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimiter:
    """Buckets of ``burst`` tokens refilled at ``rate`` per second, keyed by caller or address."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, key: str, now: float | None = None) -> None:
        """Take one token for ``key``; raise :class:`RateLimited` when none is left."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1 - tokens) / self._rate)
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # forget the least recently seen key


class ClientAddress:
    """The client address of a request, honouring ``X-Forwarded-For`` only from trusted proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies if p.strip())

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def __call__(self, scope: Mapping[str, Any]) -> str:
        """The address to limit and audit ``scope``'s request by."""
        peer = scope.get("client") or ("unknown", 0)
        address = str(peer[0])
        if not self._trusted or not self._is_trusted(address):
            return address
        forwarded = b",".join(v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for").decode("latin-1")
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            address = hop
            if not self._is_trusted(hop):
                break
        return address


class Limits:
    """The gateway's limits: logins per address and per username, API calls per user and per address, and file
    uploads per user (an upload costs the service far more than a call: one user's flood of them halved other
    users' read throughput, bench/RESULTS.md "Import bombs")."""

    def __init__(
        self,
        login_per_minute: int,
        api_per_second: int,
        trusted_proxies: Iterable[str] = (),
        *,
        upload_per_minute: int,
    ) -> None:
        self.client_address = ClientAddress(trusted_proxies)
        self.upload_user = RateLimiter(upload_per_minute / 60, burst=upload_per_minute)
        self.login_address = RateLimiter(login_per_minute / 60, burst=login_per_minute)
        self.login_username = RateLimiter(login_per_minute / 120, burst=max(login_per_minute // 2, 1))
        self.api_user = RateLimiter(api_per_second, burst=api_per_second * 2)
        self.api_address = RateLimiter(api_per_second * 4, burst=api_per_second * 8)

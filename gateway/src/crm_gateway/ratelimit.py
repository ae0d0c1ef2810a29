"""Token-bucket rate limits per caller and per client address (in this process).

Each gateway replica limits on its own, so the cluster-wide limit is the per-replica figure times the
replicas; that bounds abuse (password guessing, scraping) without a shared store on the request path.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

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


class Limits:
    """The gateway's limits: logins per address and per username, API calls per user and per address."""

    def __init__(self, login_per_minute: int, api_per_second: int) -> None:
        self.login_address = RateLimiter(login_per_minute / 60, burst=login_per_minute)
        self.login_username = RateLimiter(login_per_minute / 120, burst=max(login_per_minute // 2, 1))
        self.api_user = RateLimiter(api_per_second, burst=api_per_second * 2)
        self.api_address = RateLimiter(api_per_second * 4, burst=api_per_second * 8)

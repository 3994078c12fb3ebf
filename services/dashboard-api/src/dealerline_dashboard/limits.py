"""Login limits that protect the pod and the staff without letting an outsider lock anyone
out, kept in Redis so that every replica shares them.

The scheme (each check answers ``429`` with ``Retry-After``):

1. **Per client address**: at most ``login_ip_max_attempts`` logins, good or bad, per
   ``login_ip_window_s``. A flood from one address costs one Redis round trip per request,
   never a password check.
2. **Per (email, client address)**: ``login_max_failures`` wrong passwords for one email
   from one address lock *that pair* for ``login_lockout_s``. The person, from any other
   address (their desk, their phone), is not locked out; an attacker who wants to lock
   someone out can only lock themself out. A success clears the pair's count.
3. **Concurrency** (in the route, per replica): at most ``login_max_concurrent`` password
   checks at once (argon2id takes 64 MiB each); one more is answered ``503`` at once.

The client address is the TCP peer, or, only when the peer is one of
``trusted_proxies``, the rightmost address of ``X-Forwarded-For`` that is not a trusted
proxy (a client can prepend anything to that header, so only what our own proxies appended
is believed). Emails are kept as a hash, not in clear.

Without Redis (``state_url`` None or ``memory://``) the counts are per replica; if Redis
fails at run time, the replica falls back to its own counts and logs it, rather than
refusing every login.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import HTTPConnection

from dealerline_common.logs import get_logger

log = get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Counters(Protocol):
    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        """Count one in ``key``'s window (started by its first hit); (count, seconds left)."""

    async def peek(self, key: str) -> tuple[int, float]: ...

    async def clear(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Fixed-window counters in this process (at most ``max_keys``; expired ones go first,
    then the oldest)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[str, tuple[int, float]] = {}

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._counts.get(key)
        if entry is not None and entry[1] <= now:
            del self._counts[key]
            return None
        return entry

    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        now = time.monotonic()
        entry = self._live(key, now)
        if entry is None:
            if len(self._counts) >= self.max_keys:
                self._evict(now)
            entry = (0, now + window_s)
        count, until = entry[0] + 1, entry[1]
        self._counts[key] = (count, until)
        return count, until - now

    async def peek(self, key: str) -> tuple[int, float]:
        now = time.monotonic()
        entry = self._live(key, now)
        return (0, 0.0) if entry is None else (entry[0], entry[1] - now)

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)

    async def close(self) -> None:
        self._counts.clear()

    def _evict(self, now: float) -> None:
        for key in [k for k, (_, until) in self._counts.items() if until <= now]:
            del self._counts[key]
        while len(self._counts) >= self.max_keys:
            self._counts.pop(next(iter(self._counts)))


class RedisCounters:
    """Fixed-window counters in Redis (``SET NX EX`` + ``INCR``), shared by the replicas;
    a Redis error falls back to this replica's own :class:`MemoryCounters`."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 1.0) -> None:
        from redis.asyncio import Redis

        self.prefix = prefix
        self._redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._fallback = MemoryCounters()

    def _failed(self, op: str, exc: Exception) -> None:
        log.warning(
            "login limits: redis unavailable, counting on this replica", op=op, error=repr(exc)
        )

    async def hit(self, key: str, window_s: float) -> tuple[int, float]:
        from redis.exceptions import RedisError

        name = self.prefix + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(name, 0, px=max(1, int(window_s * 1000)), nx=True)
                pipe.incr(name)
                pipe.pttl(name)
                _, count, ttl_ms = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("hit", exc)
            return await self._fallback.hit(key, window_s)
        return int(count), max(0.0, int(ttl_ms) / 1000)

    async def peek(self, key: str) -> tuple[int, float]:
        from redis.exceptions import RedisError

        name = self.prefix + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                count, ttl_ms = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("peek", exc)
            return await self._fallback.peek(key)
        return (int(count or 0), max(0.0, int(ttl_ms) / 1000)) if count else (0, 0.0)

    async def clear(self, key: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.delete(self.prefix + key)
        except (RedisError, OSError) as exc:
            self._failed("clear", exc)
        await self._fallback.clear(key)

    async def close(self) -> None:
        await self._redis.aclose()


def counters_from_url(url: str | None, namespace: str = "") -> Counters:
    if url is None or url.strip() in ("", "memory://"):
        return MemoryCounters()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("state_url must be redis://…, rediss://…, unix://… or memory://")
    return RedisCounters(url, prefix=f"{namespace}dashboard:login:")


def _email_key(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Refusal:
    reason: str  # "rate_limited" (the address) or "locked_out" (the email from it)
    retry_after_s: float


class LoginLimits:
    def __init__(
        self,
        counters: Counters,
        *,
        ip_max_attempts: int,
        ip_window_s: float,
        max_failures: int,
        lockout_s: float,
    ) -> None:
        self.counters = counters
        self.ip_max_attempts = ip_max_attempts
        self.ip_window_s = ip_window_s
        self.max_failures = max_failures
        self.lockout_s = lockout_s

    async def check(self, ip: str, email: str) -> Refusal | None:
        """Count this attempt against ``ip``; a refusal if the address or the (email,
        address) pair is over its limit."""
        count, left = await self.counters.hit(f"ip:{ip}", self.ip_window_s)
        if count > self.ip_max_attempts:
            return Refusal("rate_limited", max(1.0, left))
        failures, left = await self.counters.peek(f"fail:{_email_key(email)}:{ip}")
        if failures >= self.max_failures:
            return Refusal("locked_out", max(1.0, left))
        return None

    async def failed(self, ip: str, email: str) -> None:
        await self.counters.hit(f"fail:{_email_key(email)}:{ip}", self.lockout_s)

    async def succeeded(self, ip: str, email: str) -> None:
        await self.counters.clear(f"fail:{_email_key(email)}:{ip}")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_ip(conn: HTTPConnection, trusted: tuple[Network, ...]) -> str:
    """The client's address (see the module docs): ``X-Forwarded-For`` only from a
    trusted proxy, read from the right, stopping at the first hop we do not trust."""
    peer = conn.client.host if conn.client else "unknown"
    peer_ip = _ip(peer)
    if not trusted or peer_ip is None or not any(peer_ip in net for net in trusted):
        return peer
    hops = [h for h in ",".join(conn.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        hop_ip = _ip(hop)
        if hop_ip is None:  # garbage: the last address our proxies vouched for is it
            return client
        client = str(hop_ip)
        if not any(hop_ip in net for net in trusted):
            return client
    return client

"""Choosing a state store from a URL: ``memory://`` (or nothing) for the in-process
store, ``redis://`` / ``rediss://`` for Redis."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import DEFAULT_TTL_S, StateStore
from .memory_store import MemoryStateStore
from .redis_store import RedisStateStore

__all__ = ["REDIS_ONLY_OPTIONS", "state_store_from_url"]

# Options only a Redis connection has: accepted, and ignored, for the in-process store, so a
# service passes its settings the same way whichever store its URL names.
REDIS_ONLY_OPTIONS = frozenset(
    {"unavailable_deadline_s", "connect_attempts", "socket_timeout_s", "client_name"}
)


def state_store_from_url(
    url: str | None, *, namespace: str = "", ttl_s: float = DEFAULT_TTL_S, **kwargs: Any
) -> StateStore:
    """The store a URL names: None, ``""`` or ``memory://`` → :class:`MemoryStateStore`;
    ``redis://…`` / ``rediss://…`` → :class:`RedisStateStore`. Extra keyword arguments
    (``conflict_deadline_s``, ``unavailable_deadline_s``, ``backoff_s``, ...) go to the
    store's constructor (the Redis-only ones are dropped for the in-process store)."""
    if url is None or url.strip() in ("", "memory://"):
        options = {k: v for k, v in kwargs.items() if k not in REDIS_ONLY_OPTIONS}
        return MemoryStateStore(namespace=namespace, ttl_s=ttl_s, **options)
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme in ("redis", "rediss"):
        return RedisStateStore(url.strip(), namespace=namespace, ttl_s=ttl_s, **kwargs)
    shown = url.split("@")[-1] if "@" in url else url  # never echo credentials
    raise ValueError(
        f"unsupported state store URL {shown!r}: use memory:// (or leave it empty) "
        "for the in-process store, or redis://host:port/db / rediss://... for Redis"
    )

"""Choosing a state store from a URL: ``memory://`` (or nothing) for the in-process
store, ``redis://`` / ``rediss://`` for Redis."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import DEFAULT_TTL_S, StateStore
from .memory_store import MemoryStateStore
from .redis_store import RedisStateStore

__all__ = ["state_store_from_url"]


def state_store_from_url(
    url: str | None, *, namespace: str = "", ttl_s: float = DEFAULT_TTL_S, **kwargs: Any
) -> StateStore:
    """The store a URL names: None, ``""`` or ``memory://`` → :class:`MemoryStateStore`;
    ``redis://…`` / ``rediss://…`` → :class:`RedisStateStore`. Extra keyword arguments
    (``retries``, ``backoff_s``, ...) go to the store's constructor."""
    if url is None or url.strip() in ("", "memory://"):
        return MemoryStateStore(namespace=namespace, ttl_s=ttl_s, **kwargs)
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme in ("redis", "rediss"):
        return RedisStateStore(url.strip(), namespace=namespace, ttl_s=ttl_s, **kwargs)
    shown = url.split("@")[-1] if "@" in url else url  # never echo credentials
    raise ValueError(
        f"unsupported state store URL {shown!r}: use memory:// (or leave it empty) "
        "for the in-process store, or redis://host:port/db / rediss://... for Redis"
    )

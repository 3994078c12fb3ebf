"""A NATS KV bucket the gateway opens on first use: the call admissions, the one-time
stream tokens and the hand-off markers each keep one, shared by every replica."""

from __future__ import annotations

import asyncio

from nats.js.kv import KeyValue

from dealerline_common.bus import Bus


class LazyBucket:
    """Opens (creating it if missing) bucket ``name`` with entries kept ``ttl_s`` the first
    time :meth:`kv` is called, once however many callers ask at the same time; a failed
    open is tried again by the next caller. The stores over a bucket subclass it."""

    def __init__(self, bus: Bus, name: str, ttl_s: float) -> None:
        self.bus = bus
        self.name = name
        self.ttl_s = ttl_s
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()

    @property
    def is_ready(self) -> bool:
        return self._kv is not None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            async with self._lock:
                if self._kv is None:
                    self._kv = await self.bus.kv(self.name, self.ttl_s)
        return self._kv

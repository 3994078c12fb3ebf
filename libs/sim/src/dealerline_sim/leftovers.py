"""What a fleet holds on to after its calls: NATS KV keys per bucket, JetStream consumers per
stream, the state store's Redis keys under the fleet's namespace, and each service's live
asyncio tasks (``dealerline_asyncio_tasks`` on its ``/metrics``).

What the design keeps, so a reader can tell a leak from a record:

- ``dl_call_admissions``: one entry per call (a replayed webhook gets the first answer),
  until the bucket's max age; ``dl_stream_tokens`` and ``dl_handoffs``: nothing once the
  stream used its token and no hand-off is pending;
- JetStream consumers: one durable per work stream and consumer group, however many
  calls there were;
- Redis: a session's keys (``state:``, ``notifications:``, ``reply:`` …) are not deleted
  when the call ends; every one of them expires ``state_ttl_s`` after the session's last
  write. A key without a TTL, or one naming no session the run placed, is a leak.

Used by ``make soak`` (``bench/soak_bench.py``) and ``tests/test_load_e2e.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import httpx
import nats.js.errors

from dealerline_cli.fleet import Fleet
from dealerline_common.bus import Bus

__all__ = ["Leftovers", "asyncio_tasks", "inspect", "kv_keys", "redis_keys"]

_TASKS = re.compile(r"^dealerline_asyncio_tasks (\d+(?:\.\d+)?)$", re.MULTILINE)
_KV_PREFIX = "KV_"


@dataclass
class RedisKeys:
    """The state store's keys under one namespace, by kind (``state``, ``reply`` …)."""

    kinds: Counter[str] = field(default_factory=Counter)
    without_ttl: list[str] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)  # session ids the keys name

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


@dataclass
class Leftovers:
    kv: dict[str, int]  # bucket → live keys
    consumers: dict[str, int]  # stream → consumers
    redis: RedisKeys
    tasks: dict[str, int]  # process → asyncio tasks alive


async def kv_keys(bus: Bus) -> tuple[dict[str, int], dict[str, int]]:
    """Live keys per KV bucket, and consumers per (non-KV) stream."""
    kv: dict[str, int] = {}
    consumers: dict[str, int] = {}
    for info in await bus.js.streams_info():
        name = info.config.name or ""
        if not name.startswith(_KV_PREFIX):
            consumers[name] = info.state.consumer_count
            continue
        bucket = await bus.js.key_value(name[len(_KV_PREFIX) :])
        try:
            kv[name[len(_KV_PREFIX) :]] = len(await bucket.keys())
        except nats.js.errors.NoKeysError:
            kv[name[len(_KV_PREFIX) :]] = 0
    return kv, consumers


async def redis_keys(url: str, namespace: str) -> RedisKeys:
    """Every key under ``namespace``: kinds, those with no TTL, the sessions they name."""
    import redis.asyncio as aioredis

    out = RedisKeys()
    client = aioredis.from_url(url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{namespace}*", count=1000)]
        # One pipeline: a gather of thousands of TTL calls outgrows the connection pool.
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.ttl(key)
            ttls = await pipe.execute() if keys else []
    finally:
        await client.aclose()
    for key, ttl in zip(keys, ttls, strict=True):
        kind, _, rest = key[len(namespace) :].partition(":")
        out.kinds[kind] += 1
        if ttl < 0:
            out.without_ttl.append(key)
        if kind != "window" and rest:
            out.sessions.add(rest.split(":", 1)[0].strip("{}"))
    return out


async def asyncio_tasks(fleet: Fleet) -> dict[str, int]:
    """Each running service's ``dealerline_asyncio_tasks`` (absent: it did not answer)."""
    out: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        for name, proc in fleet.procs.items():
            if name == "llm" or proc.process.poll() is not None:
                continue
            try:
                text = (await client.get(f"{fleet.url(name)}/metrics")).text
            except httpx.HTTPError:
                continue
            found = _TASKS.search(text)
            if found:
                out[name] = int(float(found.group(1)))
    return out


async def inspect(fleet: Fleet) -> Leftovers:
    bus = Bus(str(fleet.nats_url), "leftovers-inspector")
    await bus.connect()
    try:
        kv, consumers = await kv_keys(bus)
    finally:
        await bus.close()
    redis = RedisKeys()
    if fleet.state_url and fleet.state_url.startswith("redis"):
        redis = await redis_keys(fleet.state_url, fleet.state_namespace)
    return Leftovers(kv, consumers, redis, await asyncio_tasks(fleet))

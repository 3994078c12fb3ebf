"""LazyBucket: the gateway's KV buckets (call admissions, stream tokens, hand-off markers)
are opened on a real NATS server once, however many callers ask at the same time, and a
failed open is tried again by the next caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.js.kv import KeyValue

from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_gateway.kv_bucket import LazyBucket


class CountingBus(Bus):
    def __init__(self, url: str) -> None:
        super().__init__(url, "kv-bucket-test", file_storage=False)
        self.opened: list[str] = []
        self.fail_next = False

    async def kv(self, bucket: str, ttl_s: float) -> KeyValue:
        self.opened.append(bucket)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("bucket not reachable")
        return await super().kv(bucket, ttl_s)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[CountingBus]:
    bus = CountingBus(nats_server.url)
    await bus.connect()
    yield bus
    await bus.close()


async def test_concurrent_callers_open_the_bucket_once(bus: CountingBus) -> None:
    bucket = LazyBucket(bus, "dl_test_lazy", 60.0)
    assert not bucket.is_ready
    handles = await asyncio.gather(*(bucket.kv() for _ in range(8)))
    assert bus.opened == ["dl_test_lazy"]
    assert bucket.is_ready and all(h is handles[0] for h in handles)
    await handles[0].put("k", b"v")
    entry = await (await bucket.kv()).get("k")
    assert entry.value == b"v" and bus.opened == ["dl_test_lazy"]


async def test_a_failed_open_is_tried_again(bus: CountingBus) -> None:
    bucket = LazyBucket(bus, "dl_test_lazy_retry", 60.0)
    bus.fail_next = True
    with pytest.raises(ConnectionError):
        await bucket.kv()
    assert not bucket.is_ready
    kv = await bucket.kv()
    assert bucket.is_ready and bus.opened == ["dl_test_lazy_retry"] * 2
    await kv.put("k", b"v")

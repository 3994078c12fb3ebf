"""Helpers the STT tests share (on sys.path through conftest.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import Transcript, TurnTimings, UtteranceMeta, loads, new_id, now
from dealerline_stt.service import SttService

SENTENCE = "Hi, I'd like to book an oil change for my Toyota Camry on Tuesday."
WAIT_S = 120  # a safety net against hanging, not a latency assertion

StartStt = Callable[..., Awaitable[SttService]]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def utterance_meta(session_id: str, audio: bytes, index: int = 0) -> UtteranceMeta:
    return UtteranceMeta(
        session_id=session_id,
        utterance_id=new_id("utt"),
        index=index,
        duration_ms=len(audio) / 8.0,
        timings=TurnTimings(speech_end=now(), utterance_published=now()),
    )


async def publish_utterance(client: Bus, meta: UtteranceMeta, audio: bytes) -> None:
    await client.publish_durable(
        subjects.utterance(meta.session_id), audio, headers=meta.header(), msg_id=meta.utterance_id
    )


async def next_transcript(sub: object) -> Transcript:
    msg = await sub.next_msg(timeout=WAIT_S)  # type: ignore[attr-defined]
    return loads(Transcript, msg.data)


async def eventually(check: Callable[[], Any]) -> None:
    """Wait for a condition that follows an event the test already saw (e.g. the ack
    that comes after the published transcript); the limit only guards against hanging."""
    for _ in range(WAIT_S * 20):
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never became true")


def counter(service: SttService, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(f"dealerline_{name}", labels or None)
    return value or 0.0

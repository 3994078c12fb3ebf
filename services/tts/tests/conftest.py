"""TTS test fixtures: the real Kokoro model (loaded once) and workers started in-process
against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dealerline_common.local_nats import NatsServer
from dealerline_tts.engine import KokoroEngine
from dealerline_tts.service import TtsService
from dealerline_tts.settings import TtsSettings

StartTts = Callable[..., Awaitable[TtsService]]


@pytest.fixture(scope="session")
def kokoro_engine() -> KokoroEngine:
    return KokoroEngine(TtsSettings(device="cpu"))


@pytest.fixture
async def start_tts(nats_server: NatsServer) -> AsyncIterator[StartTts]:
    """Start a TTS worker in-process; every worker started is drained at the end."""
    started: list[TtsService] = []

    async def start(engine: Any = None, **overrides: Any) -> TtsService:
        # No pre-warmed phrases unless a test asks: most tests are about other things,
        # and a start would otherwise speak every default opener first. Nor a phrase
        # file outside the test's own folder.
        defaults = {
            "js_file_storage": False,
            "drain_timeout_s": 5.0,
            "prewarm": [],
            "cache_store": False,
        }
        settings = TtsSettings(
            nats_url=nats_server.url,
            http_port=0,
            http_host="127.0.0.1",
            **(defaults | overrides),
        )
        service = TtsService(settings, engine=engine)
        started.append(service)
        await service.start()
        return service

    yield start
    for service in started:
        await service.drain()

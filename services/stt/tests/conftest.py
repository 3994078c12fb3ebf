"""STT test fixtures: the real Whisper model (loaded once), caller speech synthesized by
Kokoro with the caller simulator's voice, and workers started against a real nats-server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# pytest's importlib mode does not let tests import conftest: the test kit is a plain
# module on sys.path (as in the gateway's tests).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dealerline_common.audio import float_to_ulaw
from dealerline_common.local_nats import NatsServer
from dealerline_common.models import bundled_voices_path, kokoro_int8_path
from dealerline_stt.engine import WhisperEngine
from dealerline_stt.service import SttService
from dealerline_stt.settings import SttSettings

Speak = Callable[[str], bytes]
StartStt = Callable[..., Awaitable[SttService]]


@pytest.fixture(scope="session")
def whisper_engine() -> WhisperEngine:
    return WhisperEngine(SttSettings(device="cpu"))


@pytest.fixture(scope="session")
def speak() -> Speak:
    """Text → 8 kHz mu-law as the gateway would send it (with a little silence around)."""
    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    session = ort.InferenceSession(str(kokoro_int8_path()), providers=["CPUExecutionProvider"])
    kokoro = Kokoro.from_session(session, str(bundled_voices_path()))

    def run(text: str) -> bytes:
        audio, rate = kokoro.create(text, voice="jm_kumo", lang="en-us")
        pad = np.zeros(int(rate * 0.2), dtype=np.float32)
        return float_to_ulaw(np.concatenate([pad, audio, pad]), rate)

    return run


@pytest.fixture
async def start_stt(nats_server: NatsServer) -> AsyncIterator[StartStt]:
    """Start an STT worker in-process; every worker started is drained at the end."""
    started: list[SttService] = []

    async def start(engine: Any = None, **overrides: Any) -> SttService:
        settings = SttSettings(
            nats_url=nats_server.url,
            http_port=0,
            http_host="127.0.0.1",
            **({"js_file_storage": False, "drain_timeout_s": 5.0} | overrides),
        )
        service = SttService(settings, engine=engine)
        started.append(service)
        await service.start()
        return service

    yield start
    for service in started:
        await service.drain()

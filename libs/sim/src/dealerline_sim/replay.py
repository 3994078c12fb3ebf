"""BENCH HARNESS — the gateway alone under many calls (``make load``'s ``gateway`` mode).

No STT, agent or TTS runs. In their place a :class:`ReplayResponder` on the bus answers
every utterance the gateway publishes with a canned reply: the same pre-synthesized audio,
published as TTS would (``call.<sid>.audio``, one message per sentence). So what is
measured is the gateway's own work per call — the caller's audio in (20 ms frames, VAD,
end of turn, utterance out), the reply out (paced 20 ms frames, marks) — not speech
models. It is a measuring device, never a way to run the product.

Each :func:`replay_call` is a light Twilio stand-in (signed webhook and handshake from
:class:`~dealerline_sim.phone.PhoneSimulator`, a plain WebSocket instead of a full
:class:`~dealerline_sim.call.Call`, so one process can drive hundreds): it sends a frame
every 20 ms — silence, then a spoken line, then silence until the reply has played — over
and over until its deadline, echoes marks, and times the reply's frames with
:class:`~dealerline_sim.crowd.FrameClock`. :class:`LoopLag` watches the load generator's
own event loop: when it lags, the caller's timings are the generator's, not the gateway's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from websockets.asyncio.client import ClientConnection, connect

from dealerline_common import audio, subjects
from dealerline_common.bus import Bus, headers_of
from dealerline_common.messages import AudioMeta, TurnTimings, UtteranceMeta, from_header

from . import media_stream as wire
from .bench import percentile
from .crowd import FrameClock
from .phone import PhoneSimulator
from .sids import new_sid
from .twiml import parse_connect_stream

__all__ = ["LoopLag", "ReplayResponder", "ReplayStats", "replay_call"]

FRAME_S = audio.FRAME_MS / 1000.0
REPLY_WAIT_S = 10.0  # a caller turn with no reply by then counts as unanswered
SILENCE = bytes([0xFF]) * audio.FRAME_BYTES  # mu-law digital silence


class ReplayResponder:
    """Answers each utterance on the bus with ``sentences`` (canned mu-law audio each)."""

    def __init__(self, bus: Bus, sentences: list[bytes]) -> None:
        self.bus = bus
        self.sentences = sentences
        self.answered = 0

    async def start(self) -> None:
        await self.bus.subscribe(subjects.ALL_UTTERANCES, self._on_utterance)

    async def _on_utterance(self, msg: Msg) -> None:
        try:
            meta = from_header(UtteranceMeta, headers_of(msg))
        except ValueError:
            return
        self.answered += 1
        turn = f"replay_{meta.utterance_id}"
        for seq, payload in enumerate(self.sentences):
            reply = AudioMeta(
                session_id=meta.session_id,
                turn_id=turn,
                utterance_id=meta.utterance_id,
                seq=seq,
                last=seq == len(self.sentences) - 1,
                text=f"Replayed sentence {seq}.",
                duration_ms=audio.duration_ms(payload),
                synth_ms=0.0,
                timings=TurnTimings(),
            )
            await self.bus.publish(subjects.audio(meta.session_id), payload, headers=reply.header())


@dataclass
class ReplayStats:
    """What every replay call of one level saw, together."""

    calls: int = 0
    failed: list[str] = field(default_factory=list)
    turns: int = 0
    unanswered: int = 0
    media: int = 0
    late: int = 0
    worst_gap_s: float = 0.0

    def add(self, clock: FrameClock) -> None:
        self.media += clock.media
        self.late += clock.late
        self.worst_gap_s = max(self.worst_gap_s, clock.worst_gap_s)


class LoopLag:
    """How late this process's own event loop wakes up from a 20 ms sleep (ms)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(FRAME_S)
            self.lags.append((time.perf_counter() - t - FRAME_S) * 1000.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> float:
        """Stops watching; the lag's p99 in ms."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return percentile(self.lags, 99) if self.lags else 0.0


@dataclass
class _Line:
    """One replay call's socket state, shared by its sender and receiver."""

    stream_sid: str
    clock: FrameClock = field(default_factory=FrameClock)
    marks: int = 0
    replied: asyncio.Event = field(default_factory=asyncio.Event)


async def _receive(ws: ClientConnection, line: _Line, sentences: int) -> None:
    async for raw in ws:
        msg = json.loads(raw)
        line.clock.append(msg)
        if msg.get("event") == "mark":
            name = msg.get("mark", {}).get("name", "")
            await ws.send(json.dumps(wire.mark_message("0", line.stream_sid, name)))
            line.marks += 1
            if line.marks % sentences == 0:
                line.replied.set()


def _frames(speech: bytes) -> list[str]:
    return [
        base64.b64encode(f.ljust(audio.FRAME_BYTES, b"\xff")).decode() for f in audio.frames(speech)
    ]


async def _send(
    ws: ClientConnection, line: _Line, speech: list[str], until: float, stats: ReplayStats
) -> None:
    """Silence, the line, silence until the reply has played (or ``REPLY_WAIT_S``); again."""
    silence = base64.b64encode(SILENCE).decode()
    seq, t0 = 2, time.perf_counter()

    async def frame(payload: str) -> None:
        nonlocal seq
        seq += 1
        msg = wire.media_message(
            str(seq), line.stream_sid, str(seq - 2), str((seq - 3) * 20), payload
        )
        await ws.send(json.dumps(msg))
        delay = t0 + (seq - 2) * FRAME_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    while time.perf_counter() < until:
        for _ in range(25):
            await frame(silence)
        line.replied.clear()
        for payload in speech:
            await frame(payload)
        stats.turns += 1
        asked = time.perf_counter()
        while not line.replied.is_set() and time.perf_counter() - asked < REPLY_WAIT_S:
            await frame(silence)
        if not line.replied.is_set():
            stats.unanswered += 1


async def replay_call(
    sim: PhoneSimulator, n: int, speech: bytes, seconds: float, stats: ReplayStats, sentences: int
) -> None:
    """One call for ``seconds``: turn after turn, each answered by the responder."""
    call_sid = new_sid("CA")
    try:
        resp = await sim.post_webhook(
            "/api/voice/incoming",
            sim.incoming_call_params(call_sid, f"+1415556{n % 10_000:04d}", "+18005550100"),
        )
        resp.raise_for_status()
        instruction = parse_connect_stream(resp.text)
        headers = sim.signature_headers(instruction.url, {})
        async with connect(sim.local_ws_url(instruction.url), additional_headers=headers) as ws:
            line = _Line(new_sid("MZ"))
            await ws.send(json.dumps(wire.connected_message()))
            start = wire.start_message(
                "1",
                account_sid=sim.account_sid,
                stream_sid=line.stream_sid,
                call_sid=call_sid,
                parameters=dict(instruction.parameters),
            )
            await ws.send(json.dumps(start))
            receiver = asyncio.create_task(_receive(ws, line, sentences))
            try:
                until = time.perf_counter() + seconds
                await _send(ws, line, _frames(speech), until, stats)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receiver
        stats.add(line.clock)
        stats.calls += 1
    except Exception as exc:  # a failed call is a result
        stats.failed.append(f"{type(exc).__name__}: {exc}"[:200])

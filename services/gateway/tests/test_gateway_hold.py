"""Playback held while the caller speaks over it: the paced sender stops at once and plays
on from the same frame; what was heard when a held turn is barged in on; the ``expects``
of the newest turn. A socket stand-in records what would go to Twilio."""

from __future__ import annotations

import asyncio
import base64
import json

from starlette.websockets import WebSocketState

from dealerline_common import audio
from dealerline_common.messages import AudioMeta
from dealerline_common.metrics import Metrics
from dealerline_gateway.call import StreamCall
from dealerline_gateway.playback import Playback
from dealerline_gateway.sender import Sender
from dealerline_gateway.telemetry import GatewayMetrics
from dealerline_gateway.tokens import StreamGrant

CHUNK_S = 0.040  # two 20 ms frames


class Socket:
    """What the sender writes, decoded (the stand-in for Twilio's WebSocket)."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.wrote = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))
        self.wrote.set()

    async def close(self, code: int = 1000) -> None:
        return None

    def media(self) -> bytes:
        return b"".join(
            base64.b64decode(str(m["media"]["payload"]))  # type: ignore[index]
            for m in self.sent
            if m["event"] == "media"
        )

    def events(self) -> list[str]:
        return [str(m["event"]) for m in self.sent]

    async def until(self, pred: object, within_s: float = 10.0) -> None:
        async def wait() -> None:
            while not pred():  # type: ignore[operator]
                self.wrote.clear()
                await self.wrote.wait()

        await asyncio.wait_for(wait(), within_s)


def meta(turn: str, seq: int, text: str, ms: float, last: bool = False, **kw: object) -> AudioMeta:
    return AudioMeta(
        session_id="sess_x",
        turn_id=turn,
        seq=seq,
        last=last,
        text=text,
        duration_ms=ms,
        synth_ms=1,
        **kw,  # type: ignore[arg-type]
    )


def sentence_audio(chunks: int) -> bytes:
    """Each 40 ms chunk a different byte, so order and gaps show."""
    return b"".join(bytes([0x10 + i]) * (2 * audio.FRAME_BYTES) for i in range(chunks))


def sender_for(ws: Socket, playback: Playback) -> Sender:
    call = StreamCall("sess_x", "MZ1", StreamGrant("sess_x", "CA1"))
    return Sender(ws, call, playback, GatewayMetrics(Metrics()), 2, lambda s: None)  # type: ignore[arg-type]


async def test_a_hold_stops_the_paced_sender_and_resume_plays_on_from_there() -> None:
    ws, playback = Socket(), Playback(16)
    sender = sender_for(ws, playback)
    task = asyncio.create_task(sender.run())
    try:
        data = sentence_audio(12)
        playback.offer(meta("t1", 0, "We are open until nine tonight.", 480), data, 1.0)
        await ws.until(lambda: len(ws.media()) >= 3 * 320)
        assert playback.hold(2.0)
        assert not playback.hold(2.1)  # held already
        # paced: Twilio has at most one chunk it has not played yet
        assert sender.buffered_s <= CHUNK_S + 1e-6
        sent_at_hold = len(ws.media())
        await asyncio.sleep(0.3)
        assert len(ws.media()) <= sent_at_hold + 320  # a chunk in flight at most
        assert "mark" not in ws.events()
        assert playback.active()  # held, not done
        held = playback.resume(2.5)
        assert held == 0.5
        await ws.until(lambda: "mark" in ws.events())
        # every frame once, in order, then the mark: it went on from where it held
        assert ws.media() == data
        assert ws.events()[-1] == "mark" and ws.events().count("mark") == 1
        assert "clear" not in ws.events()
        assert playback.mark_echoed("t1:0", 3.0)
    finally:
        task.cancel()


async def test_a_held_sentence_barged_in_counts_what_was_sent_before_the_hold() -> None:
    ws, playback = Socket(), Playback(16)
    sender = sender_for(ws, playback)
    task = asyncio.create_task(sender.run())
    try:
        playback.offer(meta("t1", 0, "Hello.", 40), sentence_audio(1), 1.0)
        text = "one two three four five six seven eight nine ten"
        playback.offer(meta("t1", 1, text, 400), sentence_audio(10), 1.0)
        await ws.until(lambda: ws.events().count("mark") == 1)
        assert playback.mark_echoed("t1:0", 2.0)
        await ws.until(lambda: len(ws.media()) >= 320 + 5 * 320)
        playback.hold(3.0)
        await asyncio.sleep(0.1)
        sent_ms = audio.duration_ms(ws.media()) - 40
        [result] = playback.barge_in(3.5)
        assert result.heard_seqs == [0]
        # "Hello." was heard through its mark; of the held sentence, the share sent
        words = result.heard_text.split()
        assert words[0] == "Hello."
        assert len(words) - 1 == int(sent_ms / 400 * 10)
        assert not playback.held
        await sender.clear()
        await asyncio.sleep(0.1)
        assert ws.events().count("mark") == 1  # the held sentence never got its mark
        assert ws.events()[-1] == "clear"
        assert not playback.mark_echoed("t1:1", 4.0)
    finally:
        task.cancel()


def test_expects_comes_from_the_newest_turns_closing_message() -> None:
    playback = Playback(16)
    assert playback.expects is None
    playback.offer(meta("t1", 0, "What's the best number to reach you?", 900), b"\x01" * 160)
    assert playback.expects is None  # not closed yet
    playback.offer(meta("t1", 1, "", 0, last=True, expects="phone"), b"")
    assert playback.expects == "phone"
    playback.offer(meta("t2", 0, "And your name?", 600), b"\x01" * 160)
    assert playback.expects is None  # a newer turn: it has not said yet
    playback.offer(meta("t2", 1, "", 0, last=True, expects="name"), b"")
    assert playback.expects == "name"
    # a late closing message of the older turn changes nothing
    playback.offer(meta("t1", 2, "", 0, last=True, expects="vin"), b"")
    assert playback.expects == "name"

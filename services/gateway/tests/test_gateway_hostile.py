"""A gateway that hostile input cannot stall (issue 16): each bound on a media stream,
shown on the caller's audio path and through the real gateway (uvicorn, a real
nats-server): an oversized WebSocket message closes only its own socket, a socket that
never starts is closed, one media frame cannot carry seconds of audio, a call's
utterances waiting for the bus are capped, bad frames cannot flood the logs, a socket
flooding messages is closed, and one socket's burst does not hold the event loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
from typing import Any

import httpx
from gw_testkit import (
    FakeTwilio,
    Running,
    collect,
    make_settings,
    next_of,
    open_session,
    running_gateway,
    silence,
    twilio_stream,
    voiced_signal,
)
from starlette.types import Message
from structlog.testing import capture_logs
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import ConnectionClosed

from dealerline_common import audio, subjects
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AudioMeta,
    KeyPresses,
    TurnTimings,
    UtteranceMeta,
    from_header,
)
from dealerline_gateway.caller_audio import CallerAudio, CallerEvent
from dealerline_gateway.codec import MediaFrame
from dealerline_gateway.flood import BEFORE_START, BURST, MessageBudget
from dealerline_gateway.playback import Playback
from dealerline_gateway.stream import MediaSession
from dealerline_gateway.ws_protocol import CLOSE_TIMEOUT_S, GatewayWebSocketProtocol

# ----------------------------------------------------------------- the caller's audio


class RecordingVad:
    """A FrameVad that keeps every frame it is asked about (and calls none voiced)."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def is_speech(self, pcm: audio.Int16Array) -> bool:
        self.seen.append(pcm.tobytes())
        return False

    def reset(self) -> None:
        return None


def test_payloads_of_any_length_are_cut_into_whole_frames_in_order() -> None:
    """Payloads of odd lengths are re-cut into 20 ms frames with only the remainder (under
    one frame) kept between them: every byte reaches the detector once, in order."""
    events: list[CallerEvent] = []
    caller = CallerAudio(make_settings("nats://127.0.0.1:1"), Playback(8), events.append)
    vad = RecordingVad()
    caller.vad = vad
    sizes = [1, 7, 159, 160, 161, 333, 8000, 4000, 2, 8000, 8000, 3181]
    stream = bytes(i % 251 for i in range(sum(sizes)))
    offset = 0
    for size in sizes:
        caller.feed(MediaFrame(stream[offset : offset + size]))
        offset += size
        assert len(caller._inbuf) == offset % audio.FRAME_BYTES
    cuts = audio.frames(stream[: len(stream) - len(stream) % audio.FRAME_BYTES])
    assert vad.seen == [audio.ulaw_to_pcm16(cut).tobytes() for cut in cuts]


# ----------------------------------------------------------------- through the gateway


async def play_reply(run: Running, sid: str, fake: FakeTwilio, turn: str) -> None:
    """A two-sentence reply published on the bus; every frame and mark reaches ``fake``."""
    sentences = [b"\x11" * 640, b"\x22" * 480]
    for seq, payload in enumerate(sentences):
        meta = AudioMeta(
            session_id=sid,
            turn_id=turn,
            seq=seq,
            last=False,
            text=f"Sentence {seq}.",
            duration_ms=audio.duration_ms(payload),
            synth_ms=1.0,
            timings=TurnTimings(),
        )
        await run.probe.publish(subjects.audio(sid), payload, headers=meta.header())
    played = b""
    for seq in range(len(sentences)):
        while True:
            msg = await asyncio.wait_for(fake.received.get(), 15)
            if msg["event"] == "media":
                played += base64.b64decode(msg["media"]["payload"])
            elif msg["event"] == "mark":
                assert msg["mark"]["name"] == f"{turn}:{seq}"
                break
    assert played == b"".join(sentences)


async def metrics_text(run: Running) -> str:
    async with httpx.AsyncClient(base_url=run.base) as client:
        return (await client.get("/metrics")).text


async def metric_appears(run: Running, line: str, within_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while line not in await metrics_text(run):
        assert loop.time() < deadline, f"{line!r} not in the metrics"
        await asyncio.sleep(0.05)


def media_message(fake: FakeTwilio, payload: bytes) -> dict[str, Any]:
    return {
        "event": "media",
        "streamSid": fake.stream_sid,
        "media": {"track": "inbound", "payload": base64.b64encode(payload).decode()},
    }


async def test_a_message_over_the_limit_closes_only_its_own_socket(gateway: Running) -> None:
    """uvicorn's default would read up to 16 MiB into one message; the gateway's limit is
    what Twilio sends with margin (64 KiB): a larger message closes that socket (1009),
    counted, and the other call plays on."""
    assert gateway.settings.ws_max_message_bytes == 65536
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with (
        twilio_stream(gateway, "CA00000000000000000000000000000011") as hostile,
        twilio_stream(gateway, "CA00000000000000000000000000000012") as fine,
    ):
        await open_session(gateway, hostile, control)
        sid = await open_session(gateway, fine, control)
        big = json.dumps(media_message(hostile, voiced_signal(10.0)))
        assert len(big) > 100_000
        await hostile.send(big)
        await asyncio.wait_for(hostile.closed.wait(), 10)
        assert hostile.close_code == 1009
        await play_reply(gateway, sid, fine, "turn_1")
        assert not fine.closed.is_set()
    await metric_appears(
        gateway, 'dealerline_gateway_bad_frames_total{reason="message_too_big"} 1.0'
    )


async def test_a_socket_that_never_starts_is_closed(nats_server: NatsServer) -> None:
    """Frames other than ``start`` do not keep a socket open: without ``start`` by the
    deadline it is refused (1008) and counted, and a call that did start is untouched."""
    async with running_gateway(nats_server, stream_start_timeout_s=1.0) as gw:
        control = await collect(gw.probe, subjects.ALL_CONTROL)
        async with (
            twilio_stream(gw, "CA00000000000000000000000000000021") as silent,
            twilio_stream(gw, "CA00000000000000000000000000000022") as chatty,
            twilio_stream(gw, "CA00000000000000000000000000000023") as fine,
        ):
            sid = await open_session(gw, fine, control)
            await chatty.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})

            async def keep_talking() -> None:
                while not chatty.closed.is_set():
                    await chatty.send(media_message(chatty, b"\xff" * 160))
                    await chatty.send("not json")
                    await asyncio.sleep(0.2)  # under the budget before start

            talker = asyncio.create_task(keep_talking())
            for sock in (silent, chatty):
                await asyncio.wait_for(sock.closed.wait(), 15)
                assert sock.close_code == 1008
            talker.cancel()
            await asyncio.gather(talker, return_exceptions=True)
            # the socket that started long before the deadline lives on
            await asyncio.sleep(1.2)
            assert not fine.closed.is_set()
            await play_reply(gw, sid, fine, "turn_1")
        metrics = await metrics_text(gw)
        assert 'dealerline_gateway_streams_rejected_total{reason="start_timeout"} 2.0' in metrics


async def test_one_frame_cannot_carry_seconds_of_audio(gateway: Running) -> None:
    """Two seconds of speech in one media payload is skipped undecoded (a live call sends
    20 ms a frame): it never becomes an utterance, and the call goes on as normal."""
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with twilio_stream(gateway) as fake:
        sid = await open_session(gateway, fake, control)
        utts = await collect(gateway.probe, subjects.utterance(sid))
        with capture_logs() as logs:
            await fake.send(media_message(fake, voiced_signal(2.0)))
            await fake.media(silence(1.0) + voiced_signal(0.6) + silence(1.5))
            meta = from_header(UtteranceMeta, (await utts.get()).headers)
        assert meta.index == 0
        # the 0.6 s spoken afterwards (plus pre-roll and tail), not the 2 s payload
        assert 600 <= meta.duration_ms <= 600 + 200 + 120 + 300
        await play_reply(gateway, sid, fake, "turn_1")
    skipped = [e for e in logs if e["event"] == "bad media-stream frame skipped"]
    assert [e["reason"] for e in skipped] == ["oversized_payload"]
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_bad_frames_total{reason="oversized_payload"} 1.0' in metrics


async def test_utterances_waiting_for_the_bus_are_capped(nats_server: NatsServer) -> None:
    """JetStream stops acking: the call's queue of utterances holds at most
    ``utterance_backlog_s`` of audio; one more is dropped, counted and logged, and once
    the bus is back what was queued goes out in order."""
    async with running_gateway(nats_server, utterance_backlog_s=1.5) as gw:
        gate = asyncio.Event()
        publish_durable = gw.bus.publish_durable

        async def stuck_utterances(subject: str, *args: Any, **kwargs: Any) -> Any:
            if subject.endswith(".utterance"):
                await gate.wait()
            return await publish_durable(subject, *args, **kwargs)

        gw.bus.publish_durable = stuck_utterances  # type: ignore[method-assign]
        control = await collect(gw.probe, subjects.ALL_CONTROL)
        async with twilio_stream(gw) as fake:
            sid = await open_session(gw, fake, control)
            utts = await collect(gw.probe, subjects.utterance(sid))
            with capture_logs() as logs:
                # 1st: being published (stuck); 2nd: queued (~0.9 s); 3rd: past 1.5 s
                for _ in range(3):
                    await fake.media(voiced_signal(0.6) + silence(1.5))
                await metric_appears(
                    gw, 'dealerline_gateway_utterances_dropped_total{reason="backlog"} 1.0'
                )
            gate.set()
            first = from_header(UtteranceMeta, (await utts.get()).headers)
            second = from_header(UtteranceMeta, (await utts.get()).headers)
            assert (first.index, second.index) == (0, 1)
            await play_reply(gw, sid, fake, "turn_1")
        dropped = [e for e in logs if e["event"].startswith("utterance dropped")]
        assert len(dropped) == 1 and dropped[0]["session_id"] == sid
        assert "dealerline_gateway_utterances_total 2.0" in await metrics_text(gw)


async def test_bad_frames_are_logged_once_per_reason_and_all_counted(gateway: Running) -> None:
    """A stream of nothing but bad frames cannot flood the logs: each reason is logged
    once per stream, every frame is counted."""
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    with capture_logs() as logs:
        async with twilio_stream(gateway) as fake:
            sid = await open_session(gateway, fake, control)
            for _ in range(50):
                await fake.send("not json")
                await fake.send(b"\x00binary")
            # frames are handled in order: once the key press is out, all were seen
            await fake.send({"event": "dtmf", "streamSid": fake.stream_sid, "dtmf": {"digit": "#"}})
            await next_of(control, KeyPresses)
    skipped = [e for e in logs if e["event"] == "bad media-stream frame skipped"]
    assert sorted(e["reason"] for e in skipped) == ["binary frame", "invalid_json"]
    assert all(e["session_id"] == sid for e in skipped)
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_bad_frames_total{reason="invalid_json"} 50.0' in metrics
    assert 'dealerline_gateway_bad_frames_total{reason="binary frame"} 50.0' in metrics


# ----------------------------------------------------------------- floods


def test_the_message_budget_allows_a_burst_then_the_rate() -> None:
    budget = MessageBudget(0.0, rate=10.0, burst=5.0)
    assert [budget.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert budget.take(0.1) and not budget.take(0.1)  # one more after 100 ms at 10/s
    assert all(budget.take(10.0) for _ in range(5))  # refilled, never past the burst
    assert not budget.take(10.0)
    assert budget.take(5.0) is False  # a clock going back adds nothing
    fresh = MessageBudget(0.0)
    assert all(fresh.take(0.0, started=False) for _ in range(BEFORE_START))
    assert not fresh.take(0.0, started=False)  # Twilio sends one message before start
    assert fresh.take(0.0)


async def test_a_socket_flooding_messages_is_closed(gateway: Running) -> None:
    """Far more messages than Twilio sends (50 a second): past the budget's burst the
    socket is closed (1008, counted as flood), and the other call plays on."""
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with (
        twilio_stream(gateway, "CA00000000000000000000000000000031") as flood,
        twilio_stream(gateway, "CA00000000000000000000000000000032") as fine,
    ):
        await open_session(gateway, flood, control)
        sid = await open_session(gateway, fine, control)
        sent = 0
        with contextlib.suppress(ConnectionClosed):
            while sent < 2 * BURST and not flood.closed.is_set():
                await flood.ws.send("not json")
                sent += 1
        await asyncio.wait_for(flood.closed.wait(), 15)
        assert flood.close_code == 1008
        await play_reply(gateway, sid, fine, "turn_1")
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_streams_rejected_total{reason="flood"} 1.0' in metrics
    counted = re.search(r'bad_frames_total\{reason="invalid_json"\} (\d+)', metrics)
    assert counted is not None and BURST - 10 <= float(counted.group(1)) < sent


async def test_a_socket_that_floods_before_start_is_closed(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    async with (
        twilio_stream(gateway, "CA00000000000000000000000000000041") as early,
        twilio_stream(gateway, "CA00000000000000000000000000000042") as fine,
    ):
        sid = await open_session(gateway, fine, control)
        with contextlib.suppress(ConnectionClosed):
            for _ in range(BEFORE_START + 5):
                await early.send(media_message(early, b"\xff" * 160))
        await asyncio.wait_for(early.closed.wait(), 15)
        assert early.close_code == 1008
        await play_reply(gateway, sid, fine, "turn_1")
    metrics = await metrics_text(gateway)
    assert 'dealerline_gateway_streams_rejected_total{reason="flood"} 1.0' in metrics
    assert f'bad_frames_total{{reason="media_before_start"}} {BEFORE_START}.0' in metrics


class QueuedSocket:
    """A WebSocket whose messages are all queued already, as uvicorn queues a whole
    network read: taking one never suspends."""

    def __init__(self, texts: list[str], trace: list[str]) -> None:
        self._messages: list[Message] = [{"type": "websocket.receive", "text": t} for t in texts]
        self._trace = trace

    async def accept(self) -> None:
        return None

    async def receive(self) -> Message:
        self._trace.append("message")
        if not self._messages:
            return {"type": "websocket.disconnect", "code": 1000}
        return self._messages.pop(0)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


async def test_the_session_yields_between_messages(gateway: Running) -> None:
    """One socket's burst of queued messages does not hold the event loop: between any
    two of them, another task gets its turn."""
    trace: list[str] = []
    ws = QueuedSocket(["not json"] * BEFORE_START, trace)
    session = MediaSession(gateway.app.state.gateway.stream_deps, ws)  # type: ignore[arg-type]
    done = asyncio.Event()

    async def other_call() -> None:
        while not done.is_set():
            trace.append("other")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_call())
    await session.run()
    done.set()
    await other
    handled = [i for i, what in enumerate(trace) if what == "message"]
    assert len(handled) == BEFORE_START + 1
    assert all(trace[a + 1 : b].count("other") >= 1 for a, b in itertools.pairwise(handled))


class RecordingConnection:
    """Stands in for the websockets parser: keeps what it is given."""

    parser_exc = None

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def receive_data(self, data: bytes) -> None:
        self.received.append(data)

    def events_received(self) -> list[object]:
        return []


class ClosableTransport:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_socket_the_gateway_closed_is_read_no_further() -> None:
    """uvicorn parses what a peer sends after the server's close until the peer replies,
    for up to 10 s; the gateway's protocol ends the connection at the first data instead,
    unparsed, and waits 1 s at most for any."""
    config = Config(app=lambda *_: None, ws="websockets-sansio")
    config.load()
    loop = asyncio.new_event_loop()
    for cls, parsed_after_close in (
        (WebSocketsSansIOProtocol, True),
        (GatewayWebSocketProtocol, False),
    ):
        proto = cls(config, ServerState(), {}, _loop=loop)
        conn = RecordingConnection()
        proto.conn = conn  # type: ignore[assignment]
        proto.transport = ClosableTransport()  # type: ignore[assignment]
        proto.handshake_complete = True
        proto.data_received(b"before the close")
        proto.close_sent = True
        proto.data_received(b"a flood after the close")
        assert len(conn.received) == (2 if parsed_after_close else 1), cls
        assert proto.transport.closed is not parsed_after_close, cls  # type: ignore[attr-defined]
    gateway_proto = GatewayWebSocketProtocol(config, ServerState(), {}, _loop=loop)
    assert gateway_proto.close_timeout == CLOSE_TIMEOUT_S
    loop.close()

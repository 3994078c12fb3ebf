"""The greeting held between the incoming webhook and the media stream: the pure
bookkeeping (bounds, TTL, one per session and call), then the real gateway on a real
nats-server (CallIncoming, audio held and replayed into the stream, expiry, a stream
that did not prefetch, failures that must not break the webhook's answer)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import nats.errors
import pytest
from gw_testkit import (
    FakeTwilio,
    Running,
    call_params,
    collect,
    next_of,
    post_signed,
    start_call,
    stream_parameters,
    twilio_stream,
)
from nats.aio.msg import Msg
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dealerline_common import subjects, tracing
from dealerline_common.conversation import turn_id_for_call, turn_id_for_stream
from dealerline_common.messages import (
    AudioMeta,
    CallIncoming,
    LatencyEvent,
    StreamStarted,
    TurnTimings,
    parse_control,
    parse_event,
)
from dealerline_gateway.prefetch import Held, Opened, PrefetchBook

CALL = "CA0123456789abcdef0123456789abcdef"


# ----------------------------------------------------------------- pure bookkeeping


def test_held_audio_is_bounded_by_count_and_bytes() -> None:
    held: Held[str] = Held(max_messages=3, max_bytes=100)
    assert held.add("a", 40) and held.add("b", 40)
    assert not held.add("c", 30)  # 110 bytes: over
    assert held.add("d", 20)  # exactly 100
    assert not held.add("e", 0)  # a fourth message: over
    assert held.items == ["a", "b", "d"]
    assert held.size == 100 and held.dropped == 2


def test_book_one_prefetch_per_session_and_call() -> None:
    book: PrefetchBook[str] = PrefetchBook(ttl_s=30.0, max_calls=2)
    assert book.open("sess_a", "CA1", now=100.0) is Opened.STARTED
    assert book.open("sess_a", "CA2", now=100.0) is Opened.DUPLICATE  # same session
    assert book.open("sess_b", "CA1", now=101.0) is Opened.DUPLICATE  # same call
    assert book.session_of_call("CA1", now=101.0) == "sess_a"
    assert book.open("sess_b", "CA2", now=101.0) is Opened.STARTED
    assert book.open("sess_c", "CA3", now=101.0) is Opened.FULL
    assert len(book) == 2 and "sess_c" not in book


def test_book_take_and_expiry() -> None:
    book: PrefetchBook[str] = PrefetchBook(ttl_s=30.0)
    book.open("sess_a", "CA1", now=100.0)
    book.open("sess_b", "CA2", now=110.0)
    assert book.next_expiry() == 130.0
    entry = book.get("sess_a")
    assert entry is not None and entry.held.add("audio", 5)
    taken = book.take("sess_a", now=129.9)
    assert taken is entry and taken.held.items == ["audio"]
    assert book.take("sess_a", now=129.9) is None  # taken once
    assert book.session_of_call("CA1", now=129.9) is None
    assert book.session_of_call("CA2", now=139.9) == "sess_b"
    assert book.session_of_call("CA2", now=140.0) is None  # past its TTL
    assert book.expired(now=139.9) == []
    gone = book.expired(now=140.0)
    assert [e.session_id for e in gone] == ["sess_b"]
    assert len(book) == 0 and book.next_expiry() is None
    # a call may start a prefetch again once the old one is gone
    assert book.open("sess_c", "CA2", now=141.0) is Opened.STARTED


def test_book_take_after_the_ttl_gives_nothing_and_forgets_it() -> None:
    book: PrefetchBook[str] = PrefetchBook(ttl_s=1.0)
    book.open("sess_a", "CA1", now=0.0)
    assert book.take("sess_a", now=1.0) is None
    assert "sess_a" not in book and book.expired(now=5.0) == []


# ----------------------------------------------------------------- through the gateway


def greeting_meta(sid: str, turn_id: str, seq: int, *, last: bool = False) -> AudioMeta:
    return AudioMeta(
        session_id=sid,
        turn_id=turn_id,
        seq=seq,
        last=last,
        text="" if last else f"Sentence {seq}.",
        duration_ms=0.0 if last else 40.0,
        synth_ms=5.0,
        timings=TurnTimings(first_sentence=1000.0, first_audio=1000.5),
    )


async def publish_audio(run: Running, meta: AudioMeta, fill: int) -> None:
    payload = b"" if meta.last else bytes([fill]) * 320
    await run.probe.publish(subjects.audio(meta.session_id), payload, headers=meta.header())
    await run.probe.nc.flush()


async def played(fake: FakeTwilio, marks: int) -> list[tuple[str, Any]]:
    """What Twilio received until ``marks`` marks: ("media", the sentence's fill byte)
    once per sentence played, ("mark", name) for each mark."""
    got: list[tuple[str, Any]] = []
    while sum(1 for kind, _ in got if kind == "mark") < marks:
        msg = await asyncio.wait_for(fake.received.get(), 15)
        if msg["event"] == "media":
            item = ("media", base64.b64decode(msg["media"]["payload"])[0])
            if not got or got[-1] != item:
                got.append(item)
        elif msg["event"] == "mark":
            got.append(("mark", msg["mark"]["name"]))
    return got


async def eventually(check: Any, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not check():
            await asyncio.sleep(0.02)


async def metrics_text(run: Running) -> str:
    async with httpx.AsyncClient(base_url=run.base) as client:
        return (await client.get("/metrics")).text


async def test_the_greeting_written_before_the_stream_plays_when_it_opens(
    gateway: Running,
) -> None:
    gw = gateway.app.state.gateway
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    params = await start_call(gateway, CALL)
    sid = params["session_id"]
    incoming = await next_of(control, CallIncoming)
    assert incoming.session_id == sid and incoming.call_sid == CALL
    assert incoming.from_number == params["from"] and incoming.to_number == params["to"]
    assert sid in gw.prefetches
    events = await collect(gateway.probe, subjects.events(sid))
    # the agent's first sentence arrives before Twilio opens the stream: held
    greeting = turn_id_for_call(CALL)
    await publish_audio(gateway, greeting_meta(sid, greeting, 0), 0x11)
    entry = gw.prefetches.book.get(sid)
    assert entry is not None
    await eventually(lambda: len(entry.held.items) == 1)
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(params)
        started = await next_of(control, StreamStarted)
        assert started.greeting_prefetched is True and not started.resumed
        assert sid not in gw.prefetches
        # the rest of the greeting comes after the stream opened, straight to it
        await publish_audio(gateway, greeting_meta(sid, greeting, 1), 0x22)
        await publish_audio(gateway, greeting_meta(sid, greeting, 2, last=True), 0)
        got = await played(fake, marks=2)
        assert [v for k, v in got if k == "mark"] == [f"{greeting}:0", f"{greeting}:1"]
        assert got == [
            ("media", 0x11),
            ("mark", f"{greeting}:0"),
            ("media", 0x22),
            ("mark", f"{greeting}:1"),
        ]
        # the greeting is timed from the stream's start, not from the webhook
        lat = None
        while lat is None or lat.turn_id != greeting:
            lat = parse_event((await events.get()).data)
            lat = lat if isinstance(lat, LatencyEvent) else None
        assert lat.timings.stream_started == started.at
        assert lat.timings.first_media is not None and lat.timings.first_media >= started.at
        assert "greeting" in lat.stages_ms
        # no subscription of the prefetch is left: nothing more is held or played twice
        await publish_audio(gateway, greeting_meta(sid, greeting, 1), 0x22)
        await asyncio.sleep(0.3)
        assert fake.received.empty()
    text = await metrics_text(gateway)
    assert 'dealerline_gateway_greeting_prefetches_total{outcome="started"} 1.0' in text
    assert 'dealerline_gateway_greeting_prefetches_total{outcome="taken"} 1.0' in text
    assert "dealerline_gateway_greeting_prefetches_open 0.0" in text


async def test_the_same_call_asking_again_gets_the_same_session_and_one_greeting(
    gateway: Running,
) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    first = await start_call(gateway, CALL)
    again = await start_call(gateway, CALL)
    assert again == first  # the same answer: same session, same one-time token
    other = await start_call(gateway, "CA" + "f" * 32)
    assert other["session_id"] != first["session_id"]
    await gateway.probe.nc.flush()
    await asyncio.sleep(0.2)
    incomings = []
    while not control.queue.empty():
        parsed = parse_control((await control.get()).data)
        if isinstance(parsed, CallIncoming):
            incomings.append(parsed.session_id)
    assert incomings == [first["session_id"], other["session_id"]]
    text = await metrics_text(gateway)
    assert 'dealerline_gateway_greeting_prefetches_total{outcome="duplicate"} 1.0' in text
    assert "dealerline_gateway_calls_total 2.0" in text


async def test_an_untaken_prefetch_expires_and_its_greeting_is_not_played(
    gateway: Running,
) -> None:
    """The stream opens after the TTL (or on another replica): nothing was held for it,
    the webhook's greeting turn is dropped (the agent says it again under the stream's
    own turn), and the stream says so in StreamStarted."""
    gw = gateway.app.state.gateway
    gw.prefetches.book = PrefetchBook(ttl_s=0.3)
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    params = await start_call(gateway, CALL)
    sid = params["session_id"]
    await publish_audio(gateway, greeting_meta(sid, turn_id_for_call(CALL), 0), 0x11)
    await eventually(lambda: sid not in gw.prefetches)
    # unsubscribed: a request on the audio subject finds no one
    with pytest.raises(nats.errors.NoRespondersError):
        await gateway.probe.nc.request(subjects.audio(sid), b"", timeout=2)
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(params)
        started = await next_of(control, StreamStarted)
        assert started.greeting_prefetched is False
        await publish_audio(gateway, greeting_meta(sid, turn_id_for_call(CALL), 0), 0x11)
        again = turn_id_for_stream(fake.stream_sid)
        await publish_audio(gateway, greeting_meta(sid, again, 0), 0x33)
        await publish_audio(gateway, greeting_meta(sid, again, 1, last=True), 0)
        got = await played(fake, marks=1)
        assert got == [("media", 0x33), ("mark", f"{again}:0")]
    text = await metrics_text(gateway)
    assert 'dealerline_gateway_greeting_prefetches_total{outcome="expired"} 1.0' in text
    assert 'dealerline_gateway_greeting_prefetch_dropped_total{reason="not_prefetched"} 1.0' in (
        text
    )


async def test_a_resumed_stream_takes_no_prefetch(gateway: Running) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    path = "/api/voice/return-to-ai?session_id=sess_back1&reason=human_ended"
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, path, call_params(CALL))
    _, params = stream_parameters(resp.text)
    assert "sess_back1" not in gateway.app.state.gateway.prefetches
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(params)
        kinds = []
        while not kinds or kinds[-1] is not StreamStarted:
            parsed = parse_control((await control.get()).data)
            kinds.append(type(parsed))
            if isinstance(parsed, StreamStarted):
                assert parsed.resumed and parsed.greeting_prefetched is False
        assert kinds == [StreamStarted]  # no CallIncoming: the agent greets at the start


async def test_the_webhook_is_answered_when_call_incoming_cannot_be_published(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway.app.state.gateway

    async def failing(subject: str, *args: Any, **kwargs: Any) -> None:
        raise nats.errors.ConnectionClosedError

    monkeypatch.setattr(gw.bus, "publish", failing)
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, "/api/voice/incoming", call_params(CALL))
    assert resp.status_code == 200, resp.text
    _, params = stream_parameters(resp.text)
    assert params["token"] and params["session_id"] not in gw.prefetches
    text = await metrics_text(gateway)
    assert 'dealerline_gateway_event_publish_failures_total{event="CallIncoming"} 1.0' in text
    assert 'dealerline_gateway_greeting_prefetches_total{outcome="failed"} 1.0' in text


async def test_the_webhook_is_answered_when_the_prefetch_cannot_subscribe(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway.app.state.gateway
    control = await collect(gateway.probe, subjects.ALL_CONTROL)

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise nats.errors.ConnectionClosedError

    monkeypatch.setattr(gw.bus, "subscribe", failing)
    async with httpx.AsyncClient(base_url=gateway.base) as client:
        resp = await post_signed(client, "/api/voice/incoming", call_params(CALL))
    assert resp.status_code == 200, resp.text
    _, params = stream_parameters(resp.text)
    assert params["session_id"] not in gw.prefetches
    await asyncio.sleep(0.2)
    assert control.queue.empty()  # no CallIncoming: the greeting waits for the stream


async def test_drain_releases_the_prefetches(gateway: Running) -> None:
    gw = gateway.app.state.gateway
    params = await start_call(gateway, CALL)
    assert params["session_id"] in gw.prefetches
    await gw.drain(0.5)
    assert params["session_id"] not in gw.prefetches
    await gateway.bus.nc.flush()  # the server has taken the unsubscribe before we ask
    with pytest.raises(nats.errors.NoRespondersError):
        await gateway.probe.nc.request(subjects.audio(params["session_id"]), b"", timeout=2)


# ----------------------------------------------------------------- one call, one trace


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory."""
    tracing.reset_tracing()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure_tracing(provider)
    yield exporter
    tracing.reset_tracing()


def trace_of(msg: Msg) -> str:
    return (msg.headers or {})["traceparent"].split("-")[1]


async def test_the_call_trace_begins_at_the_webhook_and_the_stream_carries_it_on(
    spans: InMemorySpanExporter, gateway: Running
) -> None:
    control = await collect(gateway.probe, subjects.ALL_CONTROL)
    params = await start_call(gateway, CALL)
    incoming = await control.get()
    assert isinstance(parse_control(incoming.data), CallIncoming)
    async with twilio_stream(gateway, CALL) as fake:
        await fake.start(params)
        started = await control.get()
        assert isinstance(parse_control(started.data), StreamStarted)
        # the greeting asked for at the webhook and the stream are one trace
        assert trace_of(started) == trace_of(incoming)
        await fake.stop()
    await asyncio.wait_for(gateway.app.state.gateway.wait_idle(), 10)
    calls = [s for s in spans.get_finished_spans() if s.name == "gateway.call"]
    assert len(calls) == 1
    root = calls[0]
    assert root.parent is None and root.attributes is not None
    assert format(root.context.trace_id, "032x") == trace_of(incoming)
    assert root.attributes["session_id"] == params["session_id"]
    assert root.attributes["stream_sid"] == fake.stream_sid


async def test_an_expired_prefetch_ends_its_call_span(
    spans: InMemorySpanExporter, gateway: Running
) -> None:
    gateway.app.state.gateway.prefetches.book = PrefetchBook(ttl_s=0.2)
    params = await start_call(gateway, CALL)
    await eventually(lambda: any(s.name == "gateway.call" for s in spans.get_finished_spans()))
    [root] = [s for s in spans.get_finished_spans() if s.name == "gateway.call"]
    assert root.attributes is not None
    assert root.attributes["session_id"] == params["session_id"]
    assert root.attributes["outcome"] == "no_stream"

"""Tracing: configuration from the OTEL_* variables, spans, and trace context carried in
NATS headers across a real nats-server (publish → subscribe, publish_durable → work)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from nats.aio.msg import Msg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dealerline_common import tracing
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.ops import HttpServer

OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in OTEL_VARS:
        monkeypatch.delenv(var, raising=False)
    tracing.reset_tracing()
    yield
    tracing.reset_tracing()


@pytest.fixture
def spans(no_otel_env: None) -> InMemorySpanExporter:
    """Tracing on, into memory (what a test needs instead of a collector)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure_tracing(provider)
    return exporter


async def _bus(server: NatsServer, name: str) -> Bus:
    bus = Bus(server.url, name, file_storage=False)
    await bus.connect()
    await bus.ensure_streams()
    return bus


def _by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None
    assert parent.context is not None
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


async def _eventually(check: Any) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("condition never became true")


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp"],
        ),
    ],
)
def test_exporters_come_from_the_standard_variables(
    env: dict[str, str], expected: list[str]
) -> None:
    assert tracing.exporters_from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_unsupported_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(tracing.TracingConfigError, match=variable):
        tracing.exporters_from_env(env)


async def test_off_by_default_nothing_is_recorded_or_sent(
    no_otel_env: None, nats_server: NatsServer
) -> None:
    assert tracing.setup_tracing("svc") is False
    assert not tracing.enabled()
    # The shared no-op: nothing is created per call.
    assert tracing.span("a") is tracing.span("b")
    with tracing.span("a", session_id="s") as sp:
        assert not sp.is_recording()
        assert tracing.current_context() is None
    assert tracing.inject({}) == {}

    bus = await _bus(nats_server, "off")
    got: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg)

    await bus.subscribe("call.s1.audio", on_msg)
    with tracing.span("outer"):
        await bus.publish("call.s1.audio", b"x", headers={"Dl-Meta": "{}"})
        await bus.publish("call.s1.audio", b"y")
    await _eventually(lambda: len(got) == 2)
    assert dict(got[0].headers or {}) == {"Dl-Meta": "{}"}
    assert not got[1].headers
    await bus.close()


# ------------------------------------------------------------------ spans


def test_a_failing_span_is_marked_with_a_masked_message(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.span("boom", caller_id=None, seq=3):
        raise RuntimeError("could not reach +14158675309")
    span = _by_name(spans, "boom")
    assert span.status.status_code is StatusCode.ERROR
    assert "+14158675309" not in (span.status.description or "")
    assert dict(span.attributes or {}) == {"seq": 3}  # None values are left out


async def test_a_cancelled_span_is_not_an_error(spans: InMemorySpanExporter) -> None:
    async def turn() -> None:
        with tracing.span("turn"):
            await asyncio.sleep(10)

    task = asyncio.create_task(turn())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = _by_name(spans, "turn")
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["dealerline.cancelled"] is True


def test_spans_outliving_a_block_take_explicit_times(spans: InMemorySpanExporter) -> None:
    call = tracing.start_span("call", context=tracing.Context(), session_id="s1")
    turn = tracing.start_span("turn", context=tracing.context_with(call), start_time=100.0)
    tracing.end_span(turn, end_time=101.5, outcome="answered")
    tracing.end_span(call)
    tracing.end_span(call)  # idempotent
    finished_turn = _by_name(spans, "turn")
    assert _is_child(finished_turn, _by_name(spans, "call"))
    assert finished_turn.start_time == 100_000_000_000
    assert finished_turn.end_time == 101_500_000_000
    assert (finished_turn.attributes or {})["outcome"] == "answered"
    assert tracing.trace_id(tracing.context_with(call)) == format(
        finished_turn.context.trace_id if finished_turn.context else 0, "032x"
    )


# ------------------------------------------------------------------ across the bus


async def test_trace_context_rides_every_hop_of_the_bus(
    spans: InMemorySpanExporter, nats_server: NatsServer
) -> None:
    """publish → queue-group handler → publish_durable → work consumer: one trace, each
    hop a child of the span that published to it; other headers are kept. A plain
    (fan-out) subscription gets the context but no span of its own."""
    upstream = await _bus(nats_server, "upstream")
    middle = await _bus(nats_server, "middle")
    worker = await _bus(nats_server, "worker")
    seen_headers: list[dict[str, str]] = []
    done = asyncio.Event()

    async def on_audio(msg: Msg) -> None:
        with tracing.span("middle.handle"):
            await middle.publish_durable(
                "call.s1.say", b"sentence", headers={"Dl-Meta": "m"}, msg_id="turn-1:0"
            )
            # A redelivered turn publishes again under the same id: still deduplicated.
            await middle.publish_durable(
                "call.s1.say", b"sentence", headers={"Dl-Meta": "m"}, msg_id="turn-1:0"
            )

    async def on_audio_observed(msg: Msg) -> None:
        with tracing.span("observer.handle"):
            pass

    async def on_say(msg: Msg) -> None:
        seen_headers.append(dict(msg.headers or {}))
        with tracing.span("worker.job"):
            pass
        done.set()

    await middle.subscribe("call.*.audio", on_audio, queue="middle")
    await worker.subscribe("call.*.audio", on_audio_observed)
    await worker.work("call.*.say", stream="DL_SAY", durable="tts", handler=on_say)
    with tracing.span("upstream.root"):
        await upstream.publish("call.s1.audio", b"audio", headers={"Dl-Meta": "u"})
    await asyncio.wait_for(done.wait(), 20)
    await asyncio.sleep(0.3)  # a duplicate, if the dedupe failed, would arrive by now

    root = _by_name(spans, "upstream.root")
    taken = _by_name(spans, "process call.*.audio")
    handled = _by_name(spans, "middle.handle")
    consumed = _by_name(spans, "process call.*.say")
    job = _by_name(spans, "worker.job")
    assert _is_child(_by_name(spans, "observer.handle"), root)  # context, no span of its own
    assert _is_child(taken, root)  # the queue group's consumer span
    assert (taken.attributes or {})["messaging.consumer.group.name"] == "middle"
    assert _is_child(handled, taken)  # the handler ran in the message's context
    assert _is_child(consumed, handled)  # publish_durable injected the handler's span
    assert _is_child(job, consumed)  # the work handler runs inside the consumer span
    attrs = dict(consumed.attributes or {})
    assert attrs["messaging.destination.name"] == "call.s1.say"
    assert attrs["dealerline.service"] == "worker"
    assert attrs["dealerline.job.outcome"] == "ack"
    assert len(seen_headers) == 1
    assert seen_headers[0]["Dl-Meta"] == "m"
    assert seen_headers[0]["Nats-Msg-Id"] == "turn-1:0"
    assert seen_headers[0]["traceparent"].split("-")[1] == format(
        root.context.trace_id if root.context else 0, "032x"
    )
    for bus in (upstream, middle, worker):
        await bus.close()


async def test_a_failed_job_marks_its_consumer_span(
    spans: InMemorySpanExporter, nats_server: NatsServer
) -> None:
    bus = await _bus(nats_server, "worker")
    attempts: list[int] = []

    async def failing(msg: Msg) -> None:
        attempts.append(1)
        raise RuntimeError("model exploded")

    await bus.work("call.*.say", stream="DL_SAY", durable="tts", handler=failing, max_deliver=1)
    await bus.publish_durable("call.s2.say", b"x")
    await _eventually(lambda: any(s.name.startswith("process") for s in spans.get_finished_spans()))
    consumed = _by_name(spans, "process call.*.say")
    assert consumed.status.status_code is StatusCode.ERROR
    assert (consumed.attributes or {})["dealerline.job.outcome"] == "term"
    assert consumed.parent is None  # nothing traced published it: a trace of its own
    await bus.close()


# ------------------------------------------------------------------ OTLP from the environment


@dataclass
class OtlpReceiver:
    """A real OTLP/HTTP trace receiver (protobuf), as a collector would run it."""

    requests: list[ExportTraceServiceRequest] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append(ExportTraceServiceRequest.FromString(body))
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    def spans(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(service.name, span name, attributes) of every span received."""
        out = []
        for req in self.requests:
            for rs in req.resource_spans:
                res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        attrs = {kv.key: _any(kv.value) for kv in sp.attributes}
                        out.append((res.get("service.name", ""), sp.name, attrs))
        return out


def _any(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    http = HttpServer(
        Starlette(routes=[Route("/v1/traces", receiver.endpoint, methods=["POST"])]),
        "127.0.0.1",
        0,
    )
    await http.start()
    yield receiver, f"http://127.0.0.1:{http.port}"
    await http.stop()


@pytest.mark.parametrize("service_override", [None, "dealerline-stt-canary"])
async def test_setup_exports_over_otlp_http_as_the_variables_say(
    no_otel_env: None,
    monkeypatch: pytest.MonkeyPatch,
    otlp: tuple[OtlpReceiver, str],
    service_override: str | None,
) -> None:
    receiver, url = otlp
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    if service_override:
        monkeypatch.setenv("OTEL_SERVICE_NAME", service_override)
    assert tracing.setup_tracing("stt") is True
    assert tracing.setup_tracing("other") is True  # the first call decided
    with tracing.span("stt.transcribe", session_id="s9"):
        pass
    # The exporter posts from its own thread with a blocking client.
    await asyncio.to_thread(tracing.shutdown_tracing)
    assert receiver.spans() == [(service_override or "stt", "stt.transcribe", {"session_id": "s9"})]

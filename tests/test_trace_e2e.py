"""Observability through the real fleet: one simulated call is one connected trace
(gateway → stt → agent → tts → gateway), exported by every service over OTLP/HTTP as
the standard ``OTEL_*`` variables configure it to a receiver this test runs; and each
service's ``/metrics`` holds the call's observations afterwards. Also: every metric the
Grafana dashboard charts is one a service defines."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dealerline_cli.fleet import SERVICES, Fleet, LlmChoice
from dealerline_common.metrics import Metrics
from dealerline_common.ops import HttpServer
from dealerline_sim.phone import PhoneSimulator

LINE = "Hi, I would like to book an oil change for my car."
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dealerline.json"
WAIT_S = 60  # a guard against hanging, not a latency assertion
# The services one AI-handled call crosses.
CALL_PATH = tuple(s for s in SERVICES if s.name in {"gateway", "stt", "agent", "tts"})


# ------------------------------------------------------------------ an OTLP receiver


@dataclass(frozen=True)
class SpanRecord:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attrs: dict[str, Any]


@dataclass
class OtlpReceiver:
    """A real OTLP/HTTP trace receiver (protobuf), as a collector would run it."""

    spans: list[SpanRecord] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    self.spans.append(
                        SpanRecord(
                            service=res.get("service.name", ""),
                            name=sp.name,
                            trace_id=sp.trace_id.hex(),
                            span_id=sp.span_id.hex(),
                            parent_id=sp.parent_span_id.hex(),
                            attrs={kv.key: _any(kv.value) for kv in sp.attributes},
                        )
                    )
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )


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


def _chain(span: SpanRecord, by_id: dict[str, SpanRecord]) -> list[SpanRecord]:
    """``span`` and its ancestors, up to the root (or the first one not received)."""
    out = [span]
    while out[-1].parent_id and out[-1].parent_id in by_id:
        out.append(by_id[out[-1].parent_id])
    return out


def _hops(chain: list[SpanRecord]) -> list[str]:
    """The services a chain crosses, from the root down, each hop once."""
    hops: list[str] = []
    for sp in reversed(chain):
        if not hops or hops[-1] != sp.service:
            hops.append(sp.service)
    return hops


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------ the call


@pytest.mark.e2e
async def test_one_call_is_one_connected_trace_and_its_metrics_are_recorded(
    otlp: tuple[OtlpReceiver, str],
) -> None:
    receiver, url = otlp
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    logs = Path("artifacts") / "e2e-trace" / "logs"
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(
        log_dir=logs, llm=scripted, quiet=True, extra_env=env, services=CALL_PATH
    ) as fleet:
        async with PhoneSimulator(
            fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=2.0
        ) as sim:
            await sim.prepare(LINE)
            call = await sim.place_call("+14155550123", "+18005550100")
            async with call:
                await call.wait_until_quiet(1.2, 90)  # the greeting
                await call.say(LINE)
                await call.wait_until_quiet(1.2, 120)  # the answer
                await call.hangup()
            sid = call.custom_parameters["session_id"]
        assert call.protocol_errors == []

        # ---- the trace: wait for the root, which ends with the stream
        async with asyncio.timeout(WAIT_S):
            while not any(
                s.name == "gateway.call" and s.attrs.get("session_id") == sid
                for s in receiver.spans
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the other services' last batches
        roots = [
            s
            for s in receiver.spans
            if s.name == "gateway.call" and s.attrs.get("session_id") == sid
        ]
        assert len(roots) == 1
        root = roots[0]
        assert root.parent_id == ""
        assert root.service == "gateway"
        assert "+14155550123" not in json.dumps(root.attrs)  # the caller is masked

        ours = [
            s
            for s in receiver.spans
            if s.attrs.get("session_id") == sid
            or str(s.attrs.get("messaging.destination.name", "")).startswith(f"call.{sid}.")
        ]
        strays = [(s.service, s.name, s.attrs) for s in ours if s.trace_id != root.trace_id]
        assert not strays, f"one trace per call; outside it: {strays}"
        trace = [s for s in receiver.spans if s.trace_id == root.trace_id]
        by_id = {s.span_id: s for s in trace}
        names = {(s.service, s.name) for s in trace}
        for expected in [
            ("gateway", "gateway.turn"),
            ("gateway", "gateway.endpointing"),
            ("stt", "process call.*.utterance"),
            ("stt", "stt.transcribe"),
            ("agent", "process call.*.transcript"),
            ("tts", "process call.*.say"),
            ("tts", "tts.synthesize"),
            ("gateway", "gateway.playback"),
        ]:
            assert expected in names, (expected, sorted(names))
        # every span of the call reaches the root: nothing dangles
        for s in trace:
            assert _chain(s, by_id)[-1] is root, (s.service, s.name)

        playbacks = [s for s in trace if s.name == "gateway.playback"]
        chains = [_chain(p, by_id) for p in playbacks]
        answer = [c for c in chains if any(s.name == "gateway.turn" for s in c)]
        greeting = [c for c in chains if not any(s.name == "gateway.turn" for s in c)]
        assert answer, "the reply to the caller's turn was played under the turn's trace"
        assert greeting, "the greeting was played under the call's trace"
        for chain in answer:
            assert _hops(chain) == ["gateway", "stt", "agent", "tts", "gateway"]
            assert [s.name for s in chain][-2:] == ["gateway.turn", "gateway.call"]
        for chain in greeting:
            assert _hops(chain) == ["gateway", "agent", "tts", "gateway"]
        turn = next(s for s in trace if s.name == "gateway.turn")
        assert turn.attrs["outcome"] == "answered"
        assert turn.attrs["latency_ms.total"] > 0

        # ---- the metrics: the call's observations, in seconds, on every service
        gateway = await _scrape(fleet.url("gateway"))
        for stage in ("endpointing", "stt", "total", "greeting"):
            assert _value(gateway, "dealerline_turn_stage_seconds_count", stage=stage) >= 1, stage
        assert _value(gateway, "dealerline_gateway_endpoint_delay_seconds_count") >= 1
        assert _value(gateway, "dealerline_gateway_calls_total") >= 1
        assert _value(gateway, "dealerline_gateway_active_streams") == 0  # hung up
        stt = await _scrape(fleet.url("stt"))
        # Whisper ran: on the speculative probe at the caller's pause (its transcript then
        # published as is) or, when the caller went on after it, on the whole utterance.
        decoded = _value(stt, "dealerline_stt_real_time_factor_count")
        assert decoded + _value(stt, "dealerline_stt_probe_seconds_count") >= 1
        assert _value(stt, "dealerline_stt_queue_wait_seconds_count") >= 1
        assert _value(stt, "dealerline_stt_worker_capacity") == 1
        assert _value(stt, "dealerline_stt_jobs_in_flight") == 0
        tts = await _scrape(fleet.url("tts"))
        assert _value(tts, "dealerline_tts_real_time_factor_count") >= 1
        assert _value(tts, "dealerline_tts_queue_wait_seconds_count") >= 1
        assert _value(tts, "dealerline_tts_synth_seconds_count") >= 1
        assert _value(tts, "dealerline_tts_worker_capacity") == 1
        agent = await _scrape(fleet.url("agent"))
        observed = [
            name
            for (name, _), value in agent.items()
            if re.fullmatch(r"dealerline_agent_\w+_seconds_count", name) and value >= 1
        ]
        assert observed, "the agent's latency histograms saw the turns"
        for samples in (gateway, stt, tts, agent):
            assert ("dealerline_bus_reconnects_total", ()) in samples


# ------------------------------------------------------------------ the dashboard


def _families(metrics: Metrics) -> set[str]:
    return {family.name for family in metrics.registry.collect()}


def test_every_metric_the_dashboard_charts_exists() -> None:
    from dealerline_agent.metrics import AgentMetrics
    from dealerline_escalation.metrics import EscalationMetrics
    from dealerline_gateway.telemetry import GatewayMetrics
    from dealerline_stt.service import SttService
    from dealerline_stt.settings import SttSettings
    from dealerline_tts.service import TtsService
    from dealerline_tts.settings import TtsSettings

    gateway = Metrics()
    GatewayMetrics(gateway)
    agent = AgentMetrics().base
    escalation = Metrics()
    EscalationMetrics(escalation)
    stt = SttService(SttSettings(http_port=0), engine=object()).metrics  # type: ignore[arg-type]
    tts = TtsService(TtsSettings(http_port=0), engine=object()).metrics  # type: ignore[arg-type]
    defined = set().union(*(_families(m) for m in (gateway, agent, escalation, stt, tts)))

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    charted = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bdealerline_[a-z_]+", expr)
    }
    missing = charted - defined
    assert not missing, f"the dashboard charts metrics no service defines: {sorted(missing)}"
    # the autoscaler's pair and the stage histogram are charted
    assert {"dealerline_stt_jobs_in_flight", "dealerline_stt_worker_capacity"} <= charted
    assert "dealerline_turn_stage_seconds" in charted

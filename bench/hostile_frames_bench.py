"""Outbound frame pacing of well-behaved calls while hostile sockets attack the gateway.

The gateway runs as its own process (``python -m dealerline_gateway``, 20 ms media frames)
on a local nats-server. Well-behaved calls (signed webhook, signed stream handshake,
``start`` with their one-time token) are each played a reply of ``--seconds`` of audio
published on the bus, and time every media frame that arrives. They run twice in the same
run: alone (the baseline), then while an attacker process keeps ``--attackers`` hostile
sockets busy (admitted calls sending garbage JSON, binary messages, bad base64, 1 s+
payloads, non-finite timestamps, frames naming other streams, a second ``start`` and a
flood of well-formed frames; sockets sending 100 KB messages, closed with 1009; sockets
that never start, closed after the start deadline; each reconnecting at once).

Printed (and written to ``--out``): a markdown table of the inter-frame interval of the
well-behaved calls (p50/p95/p99/max against the 20 ms the audio needs, frames more than
20 ms late), what the attackers sent and how the gateway counted it, and the cost of the
caller-audio path per 20 ms frame on this CPU (the VAD stays on the event loop because
of it).

Run alone on the machine: ``uv run python bench/hostile_frames_bench.py`` (``make
bench-hostile``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from dealerline_common import audio, subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import AudioMeta, TurnTimings
from dealerline_common.net import free_port
from dealerline_sim.bench import machine

PUBLIC_URL = "https://dealer.example.com"
STREAM_URL = "wss://dealer.example.com/api/voice/media-stream"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
FRAME_MS = audio.FRAME_MS
SENTENCE_S = 1.0


# ----------------------------------------------------------------- Twilio's side


def _sign(url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(AUTH_TOKEN).compute_signature(url, params))


class Caller:
    """One call as Twilio places it: the signed webhook, then the signed stream."""

    def __init__(self, base: str, n: int, tag: str) -> None:
        self.base = base
        self.call_sid = f"CA{tag}{n:030d}"[:34]
        self.stream_sid = f"MZ{tag}{n:030d}"[:34]
        self.params: dict[str, str] = {}

    async def incoming(self, client: httpx.AsyncClient) -> dict[str, str]:
        form = {
            "CallSid": self.call_sid,
            "AccountSid": "AC" + "0" * 32,
            "From": "+14158675309",
            "To": "+18005551212",
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        sig = _sign(PUBLIC_URL + "/api/voice/incoming", form)
        resp = await client.post(
            "/api/voice/incoming", data=form, headers={"X-Twilio-Signature": sig}
        )
        resp.raise_for_status()
        stream = ET.fromstring(resp.text).find("./Connect/Stream")
        assert stream is not None, resp.text
        self.params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        return self.params

    async def connect(self) -> ClientConnection:
        ws_url = self.base.replace("http://", "ws://") + "/api/voice/media-stream"
        return await connect(
            ws_url, additional_headers={"X-Twilio-Signature": _sign(STREAM_URL, {})}
        )

    def start_frame(self, token: str | None = None) -> str:
        params = dict(self.params)
        if token is not None:
            params["token"] = token
        start = {"streamSid": self.stream_sid, "callSid": self.call_sid}
        return json.dumps(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {**start, "tracks": ["inbound"], "customParameters": params},
            }
        )


# ----------------------------------------------------------------- well-behaved calls


async def publish_reply(bus: Bus, sid: str, seconds: float) -> None:
    sentences = max(1, round(seconds / SENTENCE_S))
    payload = bytes([0x55]) * int(audio.SAMPLE_RATE * SENTENCE_S)
    for seq in range(sentences):
        meta = AudioMeta(
            session_id=sid,
            turn_id="turn_bench",
            seq=seq,
            last=seq == sentences - 1,
            text=f"Sentence {seq}.",
            duration_ms=audio.duration_ms(payload),
            synth_ms=1.0,
            timings=TurnTimings(),
        )
        await bus.publish(subjects.audio(sid), payload, headers=meta.header())


async def good_call(base: str, bus: Bus, n: int, tag: str, seconds: float) -> list[float]:
    """Play one reply to a well-behaved call; the intervals between its media frames (ms)."""
    caller = Caller(base, n, tag)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        params = await caller.incoming(client)
    ws = await caller.connect()
    try:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        await ws.send(caller.start_frame())
        await asyncio.sleep(0.3)  # the stream subscribes to its audio
        await publish_reply(bus, params["session_id"], seconds)
        return await _time_frames(ws, caller.stream_sid, max(1, round(seconds / SENTENCE_S)))
    finally:
        await ws.close()


async def _time_frames(ws: ClientConnection, stream_sid: str, marks: int) -> list[float]:
    arrivals: list[float] = []
    while marks:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if msg["event"] == "media":
            arrivals.append(time.perf_counter())
        elif msg["event"] == "mark":
            marks -= 1
            await ws.send(
                json.dumps({"event": "mark", "streamSid": stream_sid, "mark": msg["mark"]})
            )
    return [(b - a) * 1000.0 for a, b in itertools.pairwise(arrivals)]


async def phase(base: str, bus: Bus, calls: int, tag: str, seconds: float) -> list[float]:
    results = await asyncio.gather(*(good_call(base, bus, n, tag, seconds) for n in range(calls)))
    return [x for r in results for x in r]


# ----------------------------------------------------------------- the attackers


def _media(stream_sid: str, payload: bytes | str, **extra: Any) -> str:
    body = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": body, **extra}}
    )


def garbage(caller: Caller) -> list[str | bytes]:
    """What an admitted hostile call sends, over and over."""
    sid = caller.stream_sid
    frame = bytes([0x7F]) * audio.FRAME_BYTES
    return [
        "not json",
        b"\x00\x01 binary",
        "[1, 2, 3]",
        "[" * 20_000 + "]" * 20_000,  # deeper than the JSON parser goes
        _media(sid, "!!!not base64!!!"),
        _media(sid, bytes(12_000)),  # 1.5 s in one payload
        _media(sid, frame, timestamp="1e999"),
        _media("MZ" + "e" * 32, frame),  # another stream's
        json.dumps({"event": "media", "streamSid": sid, "media": {"payload": 42}}),
        json.dumps({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": "77"}}),
        json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "nope:9"}}),
        caller.start_frame(),  # a second start
        *(_media(sid, frame) for _ in range(20)),  # a flood of well-formed frames
    ]


BIG_MESSAGE = _media("MZ" + "b" * 32, bytes(75_000))  # 100 KB: over the 64 KiB limit


async def attacker(base: str, n: int, stop: asyncio.Event, sent: Counter[str]) -> None:
    """One hostile socket after another until ``stop``: admitted calls sending garbage
    (two in three), else sockets sending one oversized message or never starting."""
    round_ = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            round_ += 1
            caller = Caller(base, n * 100_000 + round_, "ee")
            with contextlib.suppress(Exception):
                kind = "garbage" if n % 3 != 2 else ("big" if round_ % 2 else "idle")
                if kind == "garbage":
                    await caller.incoming(client)
                async with await caller.connect() as ws:
                    await _attack(ws, caller, kind, stop, sent)
            sent[f"sockets_{'garbage' if n % 3 != 2 else 'big_or_idle'}"] += 1


async def _attack(
    ws: ClientConnection, caller: Caller, kind: str, stop: asyncio.Event, sent: Counter[str]
) -> None:
    if kind == "big":
        await ws.send(BIG_MESSAGE)
        sent["big_messages"] += 1
        await ws.wait_closed()
        return
    if kind == "idle":
        await ws.send(json.dumps({"event": "connected"}))
        await ws.wait_closed()  # until the start deadline
        return
    await ws.send(caller.start_frame())
    messages = garbage(caller)
    for i, message in enumerate(itertools.cycle(messages)):
        if stop.is_set():
            return
        await ws.send(message)
        sent["garbage_messages"] += 1
        if i % 50 == 0:
            await asyncio.sleep(0)


async def attack_main(base: str, attackers: int) -> None:
    """The attacker process: attack until SIGTERM, then print what was sent (JSON)."""
    import signal

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    sent: Counter[str] = Counter()
    started = time.perf_counter()
    tasks = [asyncio.create_task(attacker(base, n, stop, sent)) for n in range(attackers)]
    print("attacking", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"seconds": time.perf_counter() - started, **sent}), flush=True)


# ----------------------------------------------------------------- the gateway


class GatewayProcess:
    """``python -m dealerline_gateway`` on a free port, logging to a file."""

    def __init__(
        self, nats_url: str, log_path: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        """``extra_env`` is applied after the defaults (e.g. the product's frames per
        message, or ``PYTHONPATH`` to run another checkout's gateway)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "GATEWAY_NATS_URL": nats_url,
            "GATEWAY_HTTP_HOST": "127.0.0.1",
            "GATEWAY_HTTP_PORT": str(self.port),
            "GATEWAY_PUBLIC_URL": PUBLIC_URL,
            "GATEWAY_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "GATEWAY_JS_FILE_STORAGE": "false",
            "GATEWAY_PLAYBACK_FRAMES_PER_CHUNK": "1",  # one 20 ms frame per media message
            **(extra_env or {}),
        }
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dealerline_gateway"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base, timeout=2) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited with {self.proc.returncode}")
                await asyncio.sleep(0.2)
        raise TimeoutError("the gateway did not become ready")

    def cpu_s(self) -> float:
        """CPU seconds the gateway process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def metrics(self) -> str:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            return (await client.get("/metrics")).text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


# ----------------------------------------------------------------- the caller's audio


def caller_audio_costs() -> dict[str, float]:
    """Microseconds per 20 ms frame: the VAD with the mu-law decode alone, and the whole
    caller path (``CallerAudio.feed``) fed 20 ms frames or 1 s payloads."""
    from dealerline_gateway.caller_audio import CallerAudio
    from dealerline_gateway.codec import MediaFrame
    from dealerline_gateway.playback import Playback
    from dealerline_gateway.settings import GatewaySettings
    from dealerline_gateway.vad import make_vad

    settings = GatewaySettings(
        public_url=PUBLIC_URL, twilio_auth_token=AUTH_TOKEN, end_of_turn="silence"
    )
    speech = bytes((37 * i) % 256 for i in range(audio.SAMPLE_RATE * 20))  # 20 s, noisy
    frames = audio.frames(speech)
    vad = make_vad("webrtc", 3)
    t = time.perf_counter()
    for f in frames:
        vad.is_speech(audio.ulaw_to_pcm16(f))
    costs = {"vad": (time.perf_counter() - t) / len(frames) * 1e6}
    for name, size in (("feed_20ms", audio.FRAME_BYTES), ("feed_1s", audio.SAMPLE_RATE)):
        caller = CallerAudio(settings, Playback(8), lambda _ev: None)
        t = time.perf_counter()
        for i in range(0, len(speech), size):
            caller.feed(MediaFrame(speech[i : i + size]))
        costs[name] = (time.perf_counter() - t) / len(frames) * 1e6
    return costs


# ----------------------------------------------------------------- the report


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=1000, method="inclusive")[round(q * 1000) - 1]


def _row(name: str, calls: int, xs: list[float], cpu: float) -> str:
    late = sum(1 for x in xs if x > 2 * FRAME_MS)
    return (
        f"| {name} | {calls} | {len(xs) + calls} | {_pct(xs, 0.5):.1f} | {_pct(xs, 0.95):.1f} "
        f"| {_pct(xs, 0.99):.1f} | {max(xs):.1f} | {late} ({late / len(xs):.1%}) | {cpu:.0%} |"
    )


def _counted(metrics: str) -> str:
    found = re.findall(
        r"dealerline_gateway_(bad_frames|streams_rejected|task_failures)_total"
        r'\{(?:reason|task)="([^"]+)"\} ([0-9.e+]+)',
        metrics,
    )
    return ", ".join(f"{kind} {label}: {int(float(n))}" for kind, label, n in found) or "none"


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    sent, costs = results["sent"], results["costs"]
    secs = sent.get("seconds", 0.0) or 1.0
    lines = [
        f"### Hostile frames: outbound pacing of well-behaved calls "
        f"({dt.date.today().isoformat()}, {machine()}, run alone)",
        "",
        f"Each of {args.calls} well-behaved calls is played {args.seconds:g} s of reply "
        "(20 ms media frames, paced by the gateway); interval between consecutive frames "
        "as the call receives them, in ms (the audio needs one every 20 ms).",
        "",
        "| phase | calls | frames | p50 | p95 | p99 | max | > 40 ms | gateway CPU |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("alone (baseline)", args.calls, results["alone"], results["cpu_alone"]),
        _row(
            f"under attack ({args.attackers} hostile sockets)",
            args.calls,
            results["attack"],
            results["cpu_attack"],
        ),
        "",
        f"Attack: {sent.get('garbage_messages', 0)} garbage messages "
        f"({sent.get('garbage_messages', 0) / secs:.0f}/s) written by "
        f"{sent.get('sockets_garbage', 0)} admitted hostile calls, "
        f"{sent.get('big_messages', 0)} messages over 64 KiB, "
        f"{sent.get('sockets_big_or_idle', 0)} sockets over the limit or never started, "
        f"in {secs:.1f} s. The gateway counted: {_counted(results['metrics'])}.",
        "",
        f"Caller audio on the event loop, per 20 ms frame: VAD + mu-law decode "
        f"{costs['vad']:.1f} us; the whole caller path {costs['feed_20ms']:.1f} us fed 20 ms "
        f"frames, {costs['feed_1s']:.1f} us fed 1 s payloads (linear: no re-slicing).",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- main


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    nats = NatsServer().start()
    out_dir = Path(args.out).parent if args.out else Path("artifacts/bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    gateway = GatewayProcess(nats.url, out_dir / "hostile-gateway.log")
    bus = Bus(nats.url, "bench", file_storage=False)
    try:
        await gateway.ready()
        await bus.connect()
        await phase(gateway.base, bus, 1, "aa", 1.0)  # warm-up
        cpu = gateway.cpu_s()
        t = time.perf_counter()
        alone = await phase(gateway.base, bus, args.calls, "bb", args.seconds)
        cpu_alone = (gateway.cpu_s() - cpu) / (time.perf_counter() - t)
        attackers = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--attack",
            gateway.base,
            "--attackers",
            str(args.attackers),
            stdout=asyncio.subprocess.PIPE,
        )
        assert attackers.stdout is not None
        await attackers.stdout.readline()  # "attacking"
        await asyncio.sleep(args.warmup)
        cpu, t = gateway.cpu_s(), time.perf_counter()
        attack = await phase(gateway.base, bus, args.calls, "cc", args.seconds)
        cpu_attack = (gateway.cpu_s() - cpu) / (time.perf_counter() - t)
        attackers.terminate()
        said, _ = await asyncio.wait_for(attackers.communicate(), 60)
        sent = json.loads(said.decode().strip().splitlines()[-1])
        metrics = await gateway.metrics()
    finally:
        await bus.close()
        gateway.stop()
        nats.cleanup()
    return {
        "alone": alone,
        "attack": attack,
        "cpu_alone": cpu_alone,
        "cpu_attack": cpu_attack,
        "sent": sent,
        "metrics": metrics,
        "costs": caller_audio_costs(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="well-behaved calls")
    parser.add_argument("--attackers", type=int, default=8, help="hostile sockets at a time")
    parser.add_argument("--seconds", type=float, default=10.0, help="reply played to each call")
    parser.add_argument("--warmup", type=float, default=2.0, help="attack this long first")
    parser.add_argument("--out", default="artifacts/bench/hostile.md")
    parser.add_argument("--attack", metavar="BASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        asyncio.run(attack_main(args.attack, args.attackers))
        return
    results = asyncio.run(run_bench(args))
    text = report(args, results)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

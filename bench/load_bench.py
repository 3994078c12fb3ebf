"""``make load``: many concurrent calls — through the whole fleet, and the gateway alone.

``--mode fleet``: the whole fleet on this machine (embedded models, the scripted LLM unless
one is configured). For increasing N (``--levels``), N callers at once
(:mod:`dealerline_sim.crowd`: varied scripts, voices and speeds, speaking in real time,
started ``--stagger`` s apart), each saying ``--turns`` lines. Per N: caller turns, turn
latency p50/p95 (the caller's last voiced frame → the reply's first frame, at the caller),
unanswered turns, failed calls, late outbound frames (measured at the caller: a media
message arriving > 20 ms after the audio before it in the same sentence ran out), and each
process's CPU % over the level and RSS at its end (:mod:`dealerline_sim.procstats`). It
stops at the first N whose p95 is twice the first level's, or that has errors.

``--mode gateway``: BENCH HARNESS — ``python -m dealerline_gateway`` alone, pinned to one
core (the load generator, NATS and the replay responder on the other), with a replay speech
path in place of STT/agent/TTS (:mod:`dealerline_sim.replay`). Ramps concurrent calls
(``--gw-levels``) for ``--gw-seconds`` each until frames go late or calls fail; per level:
late frames, the gateway's CPU, its peak RSS and (RSS − idle RSS) / N, and the load
generator's own loop lag (when it lags, the caller's clock is the bottleneck, not the
gateway). Gives calls per core with 0 late frames and memory per active call.

Both print progress and write markdown tables (machine, date, figures) to ``--out``.
Short runs: ``--levels 1,2 --turns 2 --gw-levels 20,50 --gw-seconds 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from hostile_frames_bench import AUTH_TOKEN, PUBLIC_URL, GatewayProcess

from dealerline_cli.fleet import Fleet
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.logs import configure_logging
from dealerline_sim.bench import machine, percentile
from dealerline_sim.crowd import CrowdResult, FleetDoor, plans, prepare, run_crowd
from dealerline_sim.phone import PhoneSimulator
from dealerline_sim.procstats import Sampler, cpu_percent, fleet_pids, snapshot
from dealerline_sim.replay import LoopLag, ReplayResponder, ReplayStats, replay_call
from dealerline_sim.voice import synthesize_ulaw

MB = 1024 * 1024
SERVICES = ("gateway", "stt", "tts", "agent", "escalation", "dashboard-api", "aftercall", "nats")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# ----------------------------------------------------------------- the whole fleet


def _fleet_row(n: int, r: CrowdResult) -> str:
    lat = [x * 1000.0 for x in r.latencies]
    p50, p95 = (percentile(lat, 50), percentile(lat, 95)) if lat else (float("nan"),) * 2
    worst = max((c.worst_gap_s for c in r.calls), default=0.0) * 1000.0
    return (
        f"| {n} | {r.turns} | {p50:.0f} | {p95:.0f} | {r.unanswered} | {len(r.errors)} "
        f"| {r.late} of {r.media} | {worst:.0f} |"
    )


def _proc_row(n: int, cpu: dict[str, float], rss: dict[str, int]) -> str:
    cells = [
        f"{cpu[s]:.0f}% / {rss[s] / MB:.0f}" if s in cpu and s in rss else "–" for s in SERVICES
    ]
    return f"| {n} | " + " | ".join(cells) + " |"


async def fleet_mode(args: argparse.Namespace) -> str:
    rows, procs, notes = [], [], []
    saturated: int | None = None
    async with Fleet(log_dir=Path(args.log_dir) / "fleet", quiet=True) as fleet:
        door = FleetDoor(fleet.gateway_url, fleet.public_url, fleet.auth_token)
        pids = fleet_pids(fleet)
        llm = fleet.llm.describe()
        warm = plans(1, 1, first=10_000)
        await prepare(warm)
        await run_crowd(door, warm)  # warm-up, not counted
        base_p95: float | None = None
        first = 0
        for n in _ints(args.levels):
            level = plans(n, args.turns, args.stagger, first=first)
            first += n
            await prepare(level)
            before = await asyncio.to_thread(snapshot, pids())
            result = await run_crowd(door, level, quiet_s=1.5, timeout_s=args.turn_timeout)
            after = await asyncio.to_thread(snapshot, pids())
            rows.append(_fleet_row(n, result))
            procs.append(_proc_row(n, cpu_percent(before, after), after.rss))
            notes += [f"N={n}: {e}" for e in result.errors[:3]]
            print(rows[-1], flush=True)
            lat = [x * 1000.0 for x in result.latencies]
            p95 = percentile(lat, 95) if lat else float("inf")
            base_p95 = p95 if base_p95 is None else base_p95
            if result.errors or result.unanswered or p95 >= 2 * base_p95:
                saturated = n
                break
    return _fleet_report(args, rows, procs, notes, saturated, llm)


def _fleet_report(
    args: argparse.Namespace,
    rows: list[str],
    procs: list[str],
    notes: list[str],
    saturated: int | None,
    llm: str,
) -> str:
    verdict = (
        f"p95 doubled (or turns failed) at **N = {saturated}** concurrent calls."
        if saturated
        else "p95 did not double within the levels run."
    )
    out = [
        f"### Load through the fleet ({dt.date.today().isoformat()}, {machine()})",
        "",
        f"`bench/load_bench.py --mode fleet --levels {args.levels} --turns {args.turns}`: "
        f"N callers at once (started {args.stagger:g} s apart, real-time speech, varied "
        f"scripts and voices), {args.turns} turns each; LLM: {llm}. Latency: the caller's "
        "last voiced frame → the reply's first frame, at the caller. Late frames: media "
        "messages arriving > 20 ms after the audio before them in the same sentence ran out "
        "(measured at the caller).",
        "",
        "| N | turns | p50 ms | p95 ms | unanswered | failed calls | late frames | worst gap ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        verdict,
        "",
        "CPU % over the level (100 = one core) / RSS MB at its end:",
        "",
        "| N | " + " | ".join(SERVICES) + " |",
        "|---:|" + "---:|" * len(SERVICES),
        *procs,
    ]
    if notes:
        out += ["", "Errors: " + "; ".join(notes)]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------- the gateway alone


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads started later inherit it)."""
    for thread in psutil.Process(pid).threads():
        os.sched_setaffinity(thread.id, cpus)


async def _gateway_level(
    gateway: GatewayProcess, sim: PhoneSimulator, n: int, speech: bytes, args: argparse.Namespace
) -> tuple[ReplayStats, float, int, float]:
    """N replay calls at once: stats, gateway CPU %, peak RSS, generator loop lag p99."""
    stats, lag = ReplayStats(), LoopLag()
    lag.start()
    cpu0, t0 = gateway.cpu_s(), time.perf_counter()
    ramp = args.gw_ramp / max(1, n)

    async def one(i: int) -> None:
        await asyncio.sleep(i * ramp)
        await replay_call(sim, i, speech, args.gw_seconds, stats, sentences=2)

    async with Sampler(lambda: {"gateway": gateway.proc.pid}, 1.0) as sampler:
        await asyncio.gather(*(one(i) for i in range(n)))
    cpu = (gateway.cpu_s() - cpu0) / (time.perf_counter() - t0) * 100.0
    peak = max(s.rss.get("gateway", 0) for s in sampler.series)
    return stats, cpu, peak, await lag.stop()


async def gateway_mode(args: argparse.Namespace) -> str:
    cores = sorted(os.sched_getaffinity(0))
    gw_core, gen_cores = {cores[0]}, set(cores[1:]) or {cores[0]}
    os.sched_setaffinity(0, gen_cores)
    nats = NatsServer().start()
    assert nats.proc is not None
    _pin(nats.proc.pid, gen_cores)
    log_dir = Path(args.log_dir)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    if args.gw_lead_ms is not None:  # GatewayProcess passes our environment on
        os.environ["GATEWAY_PLAYBACK_LEAD_MS"] = f"{args.gw_lead_ms:g}"
    extra = {"GATEWAY_PLAYBACK_FRAMES_PER_CHUNK": str(args.gw_frames_per_chunk)}
    for kv in args.gw_env:
        key, _, value = kv.partition("=")
        extra[key] = value
    gateway = GatewayProcess(nats.url, log_dir / "load-gateway.log", extra)
    bus = Bus(nats.url, "replay-responder", file_storage=False)
    try:
        await gateway.ready()
        _pin(gateway.proc.pid, gw_core)
        await bus.connect()
        async with PhoneSimulator(gateway.base, PUBLIC_URL, AUTH_TOKEN) as sim:
            return await _ramp(args, gateway, sim, bus)
    finally:
        await bus.close()
        gateway.stop()
        nats.cleanup()


async def _ramp(
    args: argparse.Namespace, gateway: GatewayProcess, sim: PhoneSimulator, bus: Bus
) -> str:
    speech = await synthesize_ulaw("I would like to book an oil change for my car.", "jm_kumo")
    reply = [
        await synthesize_ulaw("Sure, I can help with that.", "jf_alpha"),
        await synthesize_ulaw("Which day would suit you best?", "jf_alpha"),
    ]
    await ReplayResponder(bus, reply).start()
    warm = argparse.Namespace(**{**vars(args), "gw_seconds": 8.0})
    await _gateway_level(gateway, sim, 2, speech, warm)  # warm-up, not counted
    await asyncio.sleep(2.0)
    idle = psutil.Process(gateway.proc.pid).memory_info().rss
    levels: list[GwLevel] = []
    for n in _ints(args.gw_levels):
        level = GwLevel(n, *await _gateway_level(gateway, sim, n, speech, args))
        levels.append(level)
        print(level.row(idle), flush=True)
        if level.stats.failed or level.stats.late > args.gw_stop_late * max(1, level.stats.media):
            break
        await asyncio.sleep(2.0)
    return _gateway_report(args, levels, idle)


GEN_LAG_MS = 20.0  # a load generator lagging more than one frame makes the caller's clock late


@dataclass
class GwLevel:
    n: int
    stats: ReplayStats
    cpu: float  # gateway CPU % over the level
    peak: int  # gateway peak RSS, bytes
    lag: float  # the generator's loop lag p99, ms

    @property
    def generator_bound(self) -> bool:
        return self.lag > GEN_LAG_MS

    def row(self, idle: int) -> str:
        s = self.stats
        flag = " (generator-bound)" if self.generator_bound else ""
        return (
            f"| {self.n} | {s.calls} | {len(s.failed)} | {s.turns} | {s.unanswered} "
            f"| {s.late} of {s.media} | {s.worst_gap_s * 1000:.0f} | {self.cpu:.0f}% "
            f"| {self.cpu / self.n:.2f}% | {self.peak / MB:.0f} "
            f"| {(self.peak - idle) / self.n / MB:.2f} | {self.lag:.0f}{flag} |"
        )


def _verdict(levels: list[GwLevel], idle: int) -> str:
    best = 0  # the largest level such that it and every one below had 0 late frames
    for level in levels:
        if level.stats.late or level.stats.failed:
            break
        best = level.n
    # A level whose turns went unanswered was past the core: its CPU per call is low
    # because work was left undone, so it says nothing about what a call costs.
    clean = [
        lv
        for lv in levels
        if not lv.generator_bound and not lv.stats.unanswered and not lv.stats.failed
    ]
    text = (
        f"Idle gateway RSS {idle / MB:.0f} MB. Calls on one gateway core with 0 late frames: "
        f"**{best or 'none of the levels'}**."
    )
    if clean:
        top = clean[-1]
        per_call = top.cpu / top.n
        text += (
            f" The gateway's CPU per active call at {top.n} calls (the largest level the "
            f"generator kept up with and every turn was answered at): {per_call:.2f} % of a "
            f"core, so one core would carry about {100.0 / per_call:.0f} calls at 100 % "
            "(linear projection, not measured)."
        )
    return text


def _gateway_report(args: argparse.Namespace, levels: list[GwLevel], idle: int) -> str:
    lead = f" --gw-lead-ms {args.gw_lead_ms:g}" if args.gw_lead_ms is not None else ""
    lead += f" --gw-frames-per-chunk {args.gw_frames_per_chunk}"
    env = "".join(f"; `{kv}`" for kv in args.gw_env)
    out = [
        f"### The gateway alone, one core ({dt.date.today().isoformat()}, {machine()})",
        "",
        f"`bench/load_bench.py --mode gateway --gw-levels {args.gw_levels} --gw-seconds "
        f"{args.gw_seconds:g}{lead}`. BENCH HARNESS: no STT, agent or TTS — a replay "
        "responder on the bus answers every utterance with the same two pre-synthesized "
        "sentences, so only the gateway's work is measured (caller audio in: 20 ms frames, "
        "VAD, end of turn with the turn model, utterances out; the reply out: "
        f"{20 * args.gw_frames_per_chunk} ms media messages "
        f"(`GATEWAY_PLAYBACK_FRAMES_PER_CHUNK={args.gw_frames_per_chunk}`) paced by "
        f"the gateway, marks{env}). The gateway runs pinned to one core; the callers, NATS and the "
        f"responder on the other. Each call talks for {args.gw_seconds:g} s: a line, silence "
        "until the reply has played, again. Late frames measured at the caller as in the "
        "fleet mode. Generator lag: p99 of how late the load generator's own loop woke from "
        f"a 20 ms sleep; above {GEN_LAG_MS:g} ms the generator, not the gateway, makes "
        "frames look late (such rows are marked generator-bound).",
        "",
        "| calls | ok | failed | caller turns | unanswered | late frames | worst gap ms "
        "| gateway CPU | CPU per call | peak RSS MB | MB per call | generator lag p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(level.row(idle) for level in levels),
        "",
        _verdict(levels, idle),
    ]
    return "\n".join(out) + "\n"


async def _main(args: argparse.Namespace) -> str:
    configure_logging("load-bench", level="WARNING", json=False)
    parts = []
    if args.mode in ("fleet", "both"):
        parts.append(await fleet_mode(args))
    if args.mode in ("gateway", "both"):
        parts.append(await gateway_mode(args))
    text = (
        f"Generated by `bench/load_bench.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{machine()}.\n\n" + "\n".join(parts)
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("fleet", "gateway", "both"), default="both")
    parser.add_argument("--levels", default="1,2,4,6,8,10,12,16", help="fleet: concurrent calls")
    parser.add_argument("--turns", type=int, default=3, help="fleet: caller turns per call")
    parser.add_argument("--stagger", type=float, default=0.7, help="fleet: s between call starts")
    parser.add_argument("--turn-timeout", type=float, default=60.0, help="fleet: s per reply")
    parser.add_argument(
        "--gw-levels", default="10,20,50,100,200,300,400", help="gateway: concurrent calls"
    )
    parser.add_argument("--gw-seconds", type=float, default=30.0, help="gateway: s per call")
    parser.add_argument("--gw-ramp", type=float, default=3.0, help="gateway: s to start them all")
    parser.add_argument(
        "--gw-stop-late",
        type=float,
        default=0.01,
        help="gateway: stop the ramp after a level with more than this fraction late",
    )
    parser.add_argument(
        "--gw-lead-ms",
        type=float,
        help="gateway: GATEWAY_PLAYBACK_LEAD_MS for the gateway (default: its own default)",
    )
    parser.add_argument(
        "--gw-frames-per-chunk",
        type=int,
        choices=(1, 2),
        default=2,
        help="gateway: 20 ms frames per outbound media message (2: the product's default)",
    )
    parser.add_argument(
        "--gw-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gateway: one more environment variable for the gateway (repeatable), e.g. "
        "PYTHONPATH=<other checkout>/services/gateway/src to measure a baseline",
    )
    parser.add_argument("--out", default="artifacts/bench/load.md")
    parser.add_argument("--log-dir", default="artifacts/bench-logs/load")
    args = parser.parse_args()
    text = asyncio.run(_main(args))
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

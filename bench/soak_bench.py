"""``make soak``: ``--calls`` concurrent calls for ``--minutes`` through the whole fleet, calls
ending and new ones starting continuously (:func:`dealerline_sim.crowd.keep_calling`).

Reports every process's RSS from minute ``--steady`` (default 2) to the end — first, last,
peak and growth % (:mod:`dealerline_sim.procstats`, sampled every ``--sample`` s) — the
calls placed, caller turns, unanswered turns, failed calls, turn latency and late frames
(as ``make load`` measures them), and what the fleet holds once every call has ended
(:mod:`dealerline_sim.leftovers`): each service's live asyncio tasks at the end against the
start, JetStream consumers per stream, KV keys per bucket, and the state store's Redis keys
under the fleet's namespace. Targets: RSS growth <= 10 %, 0 errors.

Markdown to ``--out`` (``artifacts/bench/soak.md``). A short run:
``--calls 3 --minutes 2 --steady 0.5``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

from dealerline_cli.fleet import Fleet
from dealerline_common.logs import configure_logging
from dealerline_sim.bench import machine, percentile
from dealerline_sim.crowd import (
    CallPlan,
    CallResult,
    CrowdResult,
    FleetDoor,
    keep_calling,
    plans,
    prepare,
    run_crowd,
)
from dealerline_sim.leftovers import Leftovers, asyncio_tasks, inspect
from dealerline_sim.procstats import Growth, Sampler, fleet_pids, rss_growth

MB = 1024 * 1024
VARIANTS = 16  # distinct (script, voice, speed) callers, synthesized before the run
TARGET_GROWTH = 10.0


@dataclasses.dataclass
class Soak:
    results: CrowdResult
    growth: dict[str, Growth]
    tasks_start: dict[str, int]
    tasks_end: dict[str, int]
    before: Leftovers
    after: Leftovers
    llm: str
    warm_sessions: set[str]  # the warm-up call's, before the soak


async def soak(args: argparse.Namespace) -> Soak:
    variants = plans(VARIANTS, args.turns)
    await prepare(variants)

    def plan_for(n: int) -> CallPlan:
        delay = n * args.stagger if n < args.calls else 0.0
        return dataclasses.replace(variants[n % VARIANTS], index=n, start_delay_s=delay)

    results: list[CallResult] = []

    def done(r: CallResult) -> None:
        results.append(r)
        if len(results) % 10 == 0 or r.error:
            print(_progress(results, r), flush=True)

    async with Fleet(log_dir=Path(args.log_dir), quiet=True) as fleet:
        door = FleetDoor(fleet.gateway_url, fleet.public_url, fleet.auth_token)
        warm = await run_crowd(door, [dataclasses.replace(variants[0], index=99_999)])
        tasks_start, before = await asyncio_tasks(fleet), await inspect(fleet)
        async with Sampler(fleet_pids(fleet), args.sample) as sampler:
            started = time.monotonic()
            until = started + args.minutes * 60.0
            await keep_calling(door, args.calls, until, plan_for, done, timeout_s=60.0)
            seconds = time.monotonic() - started
        await asyncio.sleep(args.settle)  # ended calls' last work (after-call records …)
        tasks_end, after = await asyncio_tasks(fleet), await inspect(fleet)
        growth = rss_growth(sampler.series, started + args.steady * 60.0)
        llm = fleet.llm.describe()
    warm_sessions = {c.session_id for c in warm.calls if c.session_id}
    return Soak(
        CrowdResult(results, seconds),
        growth,
        tasks_start,
        tasks_end,
        before,
        after,
        llm,
        warm_sessions,
    )


def _progress(results: list[CallResult], last: CallResult) -> str:
    turns = sum(len(r.latencies) for r in results)
    unanswered = sum(r.unanswered for r in results)
    failed = sum(1 for r in results if r.error)
    note = f" — last failed: {last.error}" if last.error else ""
    return f"{len(results)} calls, {turns} turns, {unanswered} unanswered, {failed} failed{note}"


def _summary(s: Soak) -> list[str]:
    r = s.results
    lat = [x * 1000.0 for x in r.latencies]
    p50, p95 = (percentile(lat, 50), percentile(lat, 95)) if lat else (float("nan"),) * 2
    return [
        "| calls placed | caller turns | unanswered | failed calls | p50 ms | p95 ms "
        "| late frames |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(r.calls)} | {r.turns} | {r.unanswered} | {len(r.errors)} | {p50:.0f} "
        f"| {p95:.0f} | {r.late} of {r.media} |",
    ]


def _memory(s: Soak, args: argparse.Namespace) -> list[str]:
    rows = [
        f"| process | RSS MB at {args.steady:g} min | at the end | peak | growth "
        "| asyncio tasks start → end |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, g in sorted(s.growth.items()):
        tasks = (
            f"{s.tasks_start[name]} → {s.tasks_end[name]}"
            if name in s.tasks_start and name in s.tasks_end
            else "–"
        )
        flag = " ⚠" if g.percent > TARGET_GROWTH else ""
        rows.append(
            f"| {name} | {g.first / MB:.0f} | {g.last / MB:.0f} | {g.peak / MB:.0f} "
            f"| {g.percent:+.1f} %{flag} | {tasks} |"
        )
    return rows


def _held(s: Soak) -> list[str]:
    b, a = s.before, s.after
    streams = sorted(set(b.consumers) | set(a.consumers))
    buckets = sorted(set(b.kv) | set(a.kv))
    sessions = {c.session_id for c in s.results.calls if c.session_id}
    stray = a.redis.sessions - sessions - s.warm_sessions
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(a.redis.kinds.items())) or "none"
    return [
        "JetStream consumers per stream, start → end: "
        + ", ".join(f"{n} {b.consumers.get(n, 0)} → {a.consumers.get(n, 0)}" for n in streams),
        "",
        "KV keys per bucket, start → end: "
        + ", ".join(f"{n} {b.kv.get(n, 0)} → {a.kv.get(n, 0)}" for n in buckets)
        + f" ({len(s.results.calls)} calls placed; `dl_call_admissions` keeps one per call "
        "until its max age, the others should be empty).",
        "",
        f"Redis keys under the fleet's namespace after the calls: {a.redis.total} ({kinds}); "
        f"without a TTL: {len(a.redis.without_ttl)}; sessions named: {len(a.redis.sessions)} "
        f"(of {len(sessions)} calls and {len(s.warm_sessions)} warm-up; any other: "
        f"{len(stray)}). Session keys are kept "
        "until their TTL by design (the state store's `state_ttl_s`).",
    ]


def report(s: Soak, args: argparse.Namespace) -> str:
    growths = [g.percent for g in s.growth.values()]
    worst = max(growths, default=0.0)
    ok = worst <= TARGET_GROWTH and not s.results.errors and not s.results.unanswered
    return (
        "\n".join(
            [
                f"### Soak ({dt.date.today().isoformat()}, {machine()})",
                "",
                f"`bench/soak_bench.py --calls {args.calls} --minutes {args.minutes:g}`: "
                f"{args.calls} calls at a time for {s.results.seconds / 60:.1f} min, each "
                f"{args.turns} caller turns, a new call as soon as one ends; LLM: {s.llm}.",
                "",
                *_summary(s),
                "",
                *_memory(s, args),
                "",
                *_held(s),
                "",
                f"Target RSS growth <= {TARGET_GROWTH:g} % and 0 errors: "
                + ("**met**" if ok else f"**not met** (worst growth {worst:+.1f} %)")
                + ".",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="concurrent calls")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--turns", type=int, default=3, help="caller turns per call")
    parser.add_argument("--steady", type=float, default=2.0, help="RSS counted from this minute")
    parser.add_argument("--sample", type=float, default=5.0, help="s between RSS samples")
    parser.add_argument("--stagger", type=float, default=1.0, help="s between the first calls")
    parser.add_argument("--settle", type=float, default=15.0, help="s to wait after the calls")
    parser.add_argument("--out", default="artifacts/bench/soak.md")
    parser.add_argument("--log-dir", default="artifacts/bench-logs/soak")
    args = parser.parse_args()
    configure_logging("soak-bench", level="WARNING", json=False)
    text = report(asyncio.run(soak(args)), args)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""``make chaos``: SIGKILL random workers, restart NATS and Redis, while calls go on, and
write what was lost, duplicated or mixed (see ``dealerline_sim.chaos``).

    .venv/bin/python bench/chaos_bench.py --out artifacts/bench/chaos.md
    .venv/bin/python bench/chaos_bench.py --kills 5 --nats-restarts 1 --redis-restarts 1

Exits 1 when a target is missed (a lost, duplicated or mixed reply, a greeting never heard,
a crashed service, or kill → complete p95 over 2 s), so a CI job or a shell loop can tell.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

from dealerline_sim.chaos import ChaosConfig, ChaosResult, eprint, report_markdown, run_chaos

P95_TARGET_S = 2.0


def _machine() -> str:
    cpus = os.cpu_count() or 0
    return f"{platform.machine()} {cpus} CPU, {platform.system()} {platform.release()}"


def _missed(result: ChaosResult) -> list[str]:
    t = result.tally
    missed = [
        f"{name}: {len(items)}"
        for name, items in (
            ("lost turns", t.lost),
            ("duplicated replies", t.duplicated),
            ("mixed replies", t.mixed),
            ("crashed services", result.crashes),
            ("greetings never heard", range(result.greetings_missing)),
        )
        if items
    ]
    p95 = t.percentile(95)
    if p95 is not None and p95 > P95_TARGET_S:
        missed.append(f"kill → complete p95 {p95:.2f} s > {P95_TARGET_S:.0f} s")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="artifacts/bench/chaos.md", help="markdown report")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs of random workers")
    parser.add_argument("--nats-restarts", type=int, default=5)
    parser.add_argument("--redis-restarts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="concurrent callers")
    parser.add_argument("--lines-per-call", type=int, default=3)
    parser.add_argument("--nats-down-s", type=float, default=3.0)
    parser.add_argument("--redis-down-s", type=float, default=3.0)
    parser.add_argument("--replicas", type=int, default=2, help="of stt, tts and agent")
    parser.add_argument(
        "--patience-s", type=float, default=90.0, help="a caller gives up on a turn after it"
    )
    parser.add_argument("--pace", type=float, default=1.0, help="simulated time speed-up")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-dir", default="artifacts/chaos/logs")
    args = parser.parse_args()
    config = ChaosConfig(
        kills=args.kills,
        nats_restarts=args.nats_restarts,
        redis_restarts=args.redis_restarts,
        calls=args.calls,
        lines_per_call=args.lines_per_call,
        nats_down_s=args.nats_down_s,
        redis_down_s=args.redis_down_s,
        replicas=args.replicas,
        patience_s=args.patience_s,
        pace=args.pace,
        seed=args.seed,
        log_dir=Path(args.log_dir),
        progress=eprint,
    )
    result = asyncio.run(run_chaos(config))
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = report_markdown(result, _machine(), date)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    missed = _missed(result)
    if missed:
        eprint("targets missed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: per-stage turn latency (p50/p95) over real simulated calls.

Runs the fleet on the embedded models, places calls whose caller speaks in real time, and
reads each turn's stage timings from the gateway's latency events. With ``--readme`` the
table replaces the block between the bench markers in the README, stamped with the machine
and the date.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
from pathlib import Path

from dealerline_common.logs import configure_logging

from .demo import STAGES, place_scripted_call
from .fleet import Fleet
from .phone import Transcriber

BENCH_LINES = [
    "Hi, I would like to book an oil change for my car.",
    "Tuesday morning would be great, around nine.",
    "My name is John Carter.",
    "How much does a tire rotation cost?",
    "What time do you close on Saturday?",
    "Great, thank you very much.",
]
START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def table(samples: dict[str, list[float]], turns: int, llm: str) -> str:
    rows = [
        "| stage | p50 ms | p95 ms | n |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in STAGES:
        values = samples.get(key, [])
        if values:
            rows.append(
                f"| {label} | {percentile(values, 50):.0f} | {percentile(values, 95):.0f} "
                f"| {len(values)} |"
            )
    stamp = dt.date.today().isoformat()
    head = (
        f"Measured {stamp} on {machine()} — {turns} caller turns, embedded models "
        f"(Whisper tiny.en int8, Kokoro-82M int8) on CPU, LLM: {llm}, caller speaking in "
        "real time through the phone simulator.\n\n"
    )
    return head + "\n".join(rows)


def write_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} … {END} block")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    path.write_text(f"{before}{START}\n{block}\n{END}{after}")


async def _main(args: argparse.Namespace) -> int:
    configure_logging("bench", level="WARNING", json=False)
    samples: dict[str, list[float]] = {}
    caller_turns = 0
    async with Fleet(log_dir=Path(args.log_dir)) as fleet:
        transcriber = Transcriber()
        llm = fleet.llm.describe()
        for n in range(args.calls):
            report = await place_scripted_call(
                fleet, BENCH_LINES[: args.turns], pace=1.0, transcriber=transcriber
            )
            for turn in report.turns:
                if turn.latency is None:
                    continue
                if turn.caller_said is None:
                    greeting = turn.latency.stages_ms.get("greeting")
                    if greeting is not None:
                        samples.setdefault("greeting", []).append(greeting)
                    continue
                caller_turns += 1
                for key, value in turn.latency.stages_ms.items():
                    samples.setdefault(key, []).append(value)
            print(f"call {n + 1}/{args.calls}: {len(report.turns) - 1} caller turns", flush=True)
    if caller_turns < 5:
        print(f"only {caller_turns} turns with timings; need at least 5", file=sys.stderr)
        return 1
    block = table(samples, caller_turns, llm)
    print(block)
    if args.readme:
        write_readme(Path(args.readme), block)
        print(f"\nwritten into {args.readme}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Turn latency benchmark through the fleet.")
    parser.add_argument("--turns", type=int, default=6, help="caller turns per call (max 6)")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--readme", help="README to write the table into")
    parser.add_argument("--log-dir", default="artifacts/bench-logs")
    args = parser.parse_args()
    args.turns = max(1, min(args.turns, len(BENCH_LINES)))
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()

"""``make bench``: per-stage turn latency (p50/p95) and talking over the agent, through the
real fleet.

Runs the fleet on the embedded models and places calls whose caller speaks in real time:

- scripted calls (:data:`BENCH_LINES`): each turn's stage timings from the gateway's
  latency events, the ``system`` stage among them (end of speech → first reply frame,
  less the LLM's time to its first sentence), TTS first audio, the greeting, why each
  turn ended and whether its transcript was made during the caller's pause;
- one call where the caller talks over a long answer with the dev set's backchannels and
  interruptions (:mod:`dealerline_sim.talk_over_bench`): how many backchannels stopped
  the answer, and the ``clear`` delay after each interruption's speech onset.

With ``--eot`` the end-of-turn tables of ``bench/eot_bench.py`` (offline, on the dev set)
come first. With ``--readme`` everything replaces the block between the bench markers in
the README, stamped with the machine and the date.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dealerline_cli.fleet import Fleet
from dealerline_common.logs import configure_logging

from .call import Call
from .call_records import TalkKind
from .caller_speech import Recorded
from .demo import STAGES, CallReport, place_scripted_call
from .devset import DevCase, load
from .phone import PhoneSimulator, Transcriber
from .talk_over_bench import Clip, TalkOverStats, interleave, run_talk_overs, stats

BENCH_LINES = [
    "Hi, I would like to book an oil change for my car.",
    "Tuesday morning would be great, around nine.",
    "My name is John Carter.",
    "How much does a tire rotation cost?",
    "What time do you close on Saturday?",
    "Great, thank you very much.",
]
GREETING_HEARD = ("greeting_heard", "the caller's stream start → greeting's first frame heard")
START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
CALLER = "+14155550123"
DEALER = "+18005550100"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
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


@dataclass
class Samples:
    """What the scripted calls measured."""

    stages: dict[str, list[float]] = field(default_factory=dict)
    caller_turns: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    speculative: int = 0  # caller turns whose transcript was made during the pause

    def note_greeting(self, ms: float | None) -> None:
        """The caller's wait for the greeting (stream start → first frame), if known."""
        if ms is not None:
            self.stages.setdefault("greeting_heard", []).append(ms)

    def add(self, report: CallReport) -> None:
        for turn in report.turns:
            if turn.latency is None:
                continue
            stages = turn.latency.stages_ms
            if turn.caller_said is None:
                if "greeting" in stages:
                    self.stages.setdefault("greeting", []).append(stages["greeting"])
                continue
            self.caller_turns += 1
            for key, value in stages.items():
                if key != "greeting":
                    self.stages.setdefault(key, []).append(value)
            if turn.end_of_turn is not None:
                self.reasons[turn.end_of_turn.reason] += 1
            self.speculative += bool(turn.speculative)


def stage_table(samples: Samples) -> str:
    rows = [
        "| stage | p50 ms | p95 ms | n |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in [*STAGES, GREETING_HEARD]:
        values = samples.stages.get(key, [])
        if values:
            rows.append(
                f"| {label} | {percentile(values, 50):.0f} | {percentile(values, 95):.0f} "
                f"| {len(values)} |"
            )
    return "\n".join(rows)


def talk_over_table(s: TalkOverStats) -> str:
    stopping = ", ".join(s.backchannels_stopping)
    missed = ", ".join(s.interruptions_missed)
    clears = s.clear_after_onset_ms
    return "\n".join(
        [
            "| caller talks over the answer | result |",
            "| --- | --- |",
            f"| backchannels that stopped the answer | {len(s.backchannels_stopping)} of "
            f"{s.backchannels}" + (f" ({stopping})" if stopping else "") + " |",
            f"| interruptions that got a `clear` | {len(clears)} of {s.interruptions}"
            + (f" (missed: {missed})" if missed else "")
            + " |",
            f"| `clear` after the interruption's speech onset p50 / p95 | "
            f"{percentile(clears, 50):.0f} ms / {percentile(clears, 95):.0f} ms |",
        ]
    )


def fleet_block(samples: Samples, llm: str, talk: TalkOverStats | None) -> str:
    stamp = dt.date.today().isoformat()
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(samples.reasons.items())) or "none given"
    parts = [
        f"**Through the fleet** (`python -m dealerline_sim.bench`, {stamp}, {machine()}, "
        f"load average {os.getloadavg()[0]:.1f}): {samples.caller_turns} caller turns, "
        "embedded models (Whisper tiny.en int8, Kokoro-82M int8) on CPU, LLM: "
        f"{llm}, caller speaking in real time through the phone simulator.",
        stage_table(samples),
        f"Why the turns ended: {reasons}; transcripts made during the caller's pause "
        f"(speculative): {samples.speculative} of {samples.caller_turns}.",
    ]
    if talk is not None:
        parts += [
            f"**Talking over the agent through the fleet** ({talk.backchannels} backchannels "
            f"and {talk.interruptions} interruptions from the dev set, said 1 s into the "
            "agent's long answer):",
            talk_over_table(talk),
        ]
    return "\n\n".join(parts)


def write_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} … {END} block")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    path.write_text(f"{before}{START}\n{block}\n{END}{after}")


def _clip(case: DevCase) -> Clip:
    end = int((case.true_end_ms + 200.0) * 8)
    audio = Recorded(case.audio[:end], case.text, onset_ms=case.speech_start_ms)
    kind: TalkKind = "backchannel" if case.kind == "backchannel" else "interruption"
    return Clip(kind, audio, case.id)


def devset_clips(interruptions: int, root: Path | None = None) -> list[Clip]:
    """The dev set's backchannels and its first ``interruptions`` interruptions, cut 200 ms
    after their speech ends (the set keeps 2.5 s of line noise after it)."""
    backs = [_clip(c) for c in load("backchannel", root=root)]
    inters = [_clip(c) for c in load("interruption", root=root)[:interruptions]]
    return interleave(backs, inters)


def greeting_ms(call: Call) -> float | None:
    """The caller's wait for the greeting: stream start sent → its first media frame."""
    first, stream = call.first_media_received_at, call.streams[0] if call.streams else None
    if first is None or stream is None or stream.started_at is None:
        return None
    return (first - stream.started_at) * 1000.0


async def talk_over_call(fleet: Fleet, clips: list[Clip]) -> tuple[TalkOverStats, Call]:
    """One call that talks over the agent's answers with ``clips``."""
    async with PhoneSimulator(fleet.gateway_url, fleet.public_url, fleet.auth_token) as sim:
        call = await sim.place_call(CALLER, DEALER)
        async with call:
            await call.wait_until_quiet(1.2, 90)  # the greeting
            records = await run_talk_overs(call, clips)
    return stats(list(zip(clips, records, strict=True))), call


async def greeting_calls(fleet: Fleet, n: int) -> list[float]:
    """``n`` calls that hang up once the greeting's first frame arrived: its wait, each."""
    out: list[float] = []
    async with PhoneSimulator(fleet.gateway_url, fleet.public_url, fleet.auth_token) as sim:
        for _ in range(n):
            call = await sim.place_call(CALLER, DEALER)
            async with call, asyncio.timeout(30):
                while True:  # the greeting's first frame
                    if call.first_media_received_at is not None:
                        break
                    await asyncio.sleep(0.01)
            ms = greeting_ms(call)
            if ms is not None:
                out.append(ms)
            await asyncio.sleep(1.0)  # let the hang-up's work settle before the next call
    return out


async def _main(args: argparse.Namespace) -> int:
    configure_logging("bench", level="WARNING", json=False)
    samples = Samples()
    talk: TalkOverStats | None = None
    async with Fleet(log_dir=Path(args.log_dir)) as fleet:
        transcriber = Transcriber()
        llm = fleet.llm.describe()
        for n in range(args.calls):
            report = await place_scripted_call(
                fleet, BENCH_LINES[: args.turns], pace=1.0, transcriber=transcriber
            )
            samples.add(report)
            samples.note_greeting(greeting_ms(report.call))
            print(f"call {n + 1}/{args.calls}: {len(report.turns) - 1} caller turns", flush=True)
        if args.interruptions >= 0:
            clips = devset_clips(args.interruptions, Path(args.devset) if args.devset else None)
            talk, call = await talk_over_call(fleet, clips)
            samples.note_greeting(greeting_ms(call))
            print(f"talk-over call: {len(clips)} clips", flush=True)
        for ms in await greeting_calls(fleet, args.greetings):
            samples.note_greeting(ms)
    need = min(5, args.turns * args.calls)
    if samples.caller_turns < need:
        print(
            f"only {samples.caller_turns} turns with timings; need at least {need}",
            file=sys.stderr,
        )
        return 1
    block = fleet_block(samples, llm, talk)
    if args.eot_text:
        block = args.eot_text.strip() + "\n\n" + block
    print(block)
    if args.readme:
        await asyncio.to_thread(write_readme, Path(args.readme), block)
        print(f"\nwritten into {args.readme}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Turn latency benchmark through the fleet.")
    parser.add_argument("--turns", type=int, default=6, help="caller turns per call (max 6)")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument(
        "--interruptions",
        type=int,
        default=6,
        help="dev-set interruptions said over the agent, with all its backchannels "
        "(-1: no talk-over call)",
    )
    parser.add_argument(
        "--greetings", type=int, default=5, help="extra calls that only time the greeting"
    )
    parser.add_argument("--devset", help="a dev set built with --out (default: the packaged one)")
    parser.add_argument("--eot", help="the end-of-turn tables of bench/eot_bench.py (--out)")
    parser.add_argument("--readme", help="README to write the tables into")
    parser.add_argument("--log-dir", default="artifacts/bench-logs")
    args = parser.parse_args()
    args.turns = max(1, min(args.turns, len(BENCH_LINES)))
    args.eot_text = None
    if args.eot:
        eot = Path(args.eot)
        if not eot.exists():
            sys.exit(f"{eot} is missing: run bench/eot_bench.py --out {eot} first")
        args.eot_text = eot.read_text()
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()

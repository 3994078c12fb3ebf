"""End-of-turn and barge-in benchmark on the development set (offline, real components).

Every dev-set clip (``dealerline_sim.devset.load()``) goes through the gateway's own caller
path on a virtual clock, with the real Smart Turn model and Whisper tiny.en answering its
probes after their measured compute time on this CPU (see ``eot_sim.py``). Reported:

- per decision policy (the smart end of turn with the gateway's defaults, and the old
  fixed 600 ms silence rule side by side): false cut-offs (the turn ended inside a pause
  of a ``pause`` case, or before the end of any turn with more speech to come), and the
  delay from the true end of speech to the end of the turn, p50/p95;
- a trade-off curve over the main knobs (``probe_after_ms``, ``model_threshold``,
  ``unsure_max_ms``): cut-offs / delay p50 / p95 per setting;
- barge-in over playing audio: how many backchannels would stop playback, and the
  ``clear`` delay after the speech onset of the interruptions (p50/p95).

Run: ``uv run python bench/eot_bench.py [--out artifacts/bench/eot.md]``; ``make bench``
runs it before the fleet bench, which puts its tables into the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eot_sim import Engines, Run, gateway_settings, percentile, run_clip

from dealerline_common.logs import configure_logging
from dealerline_sim import devset
from dealerline_sim.bench import machine
from dealerline_sim.devset import DevCase


@dataclass
class TurnOutcome:
    id: str
    kind: str
    cut: bool
    delay_ms: float | None  # the final end after the true end (None: it never ended)
    reason: str | None  # why the final end was declared
    ends: int  # utterances the clip became
    false_triggers: int  # utterances of line noise before the speech
    cut_reasons: list[str]  # why the turn was declared over too soon
    cut_at_ms: list[float]  # when (ms into the clip)


@dataclass
class BargeOutcome:
    id: str
    kind: str
    stopped: bool  # a barge-in (clear) was declared
    clear_ms: float | None  # after the speech onset
    verdict: str | None  # why playback resumed, if it did
    reason: str | None  # why it barged in, if it did


# --------------------------------------------------------------------------- judging


def judge_turn(case: DevCase, run: Run) -> TurnOutcome:
    ends = [
        (t * 1000.0, h)
        for t, h in run.ends
        if h.utterance.speech_end_at * 1000.0 >= case.speech_start_ms - 20.0
    ]
    last_chunk = case.pause_spans_ms[-1][1] if case.pause_spans_ms else case.speech_start_ms
    final = ends[-1] if ends and ends[-1][0] >= last_chunk else None
    info = final[1].end_of_turn if final is not None else None
    early = [
        (t, h)
        for i, (t, h) in enumerate(ends)
        if t < last_chunk or (i < len(ends) - 1 and t < case.true_end_ms)
    ]
    return TurnOutcome(
        id=case.id,
        kind=case.kind,
        cut=bool(early),
        delay_ms=None if final is None else final[0] - case.true_end_ms,
        reason=info.reason if info is not None else None,
        ends=len(ends),
        false_triggers=len(run.ends) - len(ends),
        cut_reasons=[h.end_of_turn.reason if h.end_of_turn else "?" for _, h in early],
        cut_at_ms=[round(t) for t, _ in early],
    )


def judge_barge(case: DevCase, run: Run) -> BargeOutcome:
    first = run.barge_ins[0] if run.barge_ins else None
    return BargeOutcome(
        id=case.id,
        kind=case.kind,
        stopped=first is not None,
        clear_ms=None if first is None else first[0] * 1000.0 - case.speech_start_ms,
        verdict=run.resumes[0][1] if run.resumes else None,
        reason=first[1] if first is not None else None,
    )


def _turn_done(case: DevCase):  # type: ignore[no-untyped-def]
    true_end_s = case.true_end_ms / 1000.0
    return lambda run: any(t >= true_end_s for t, _ in run.ends)


def _barge_done(run: Run) -> bool:
    return bool(run.barge_ins) or bool(run.not_turns)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Policy:
    label: str
    smart: bool
    knobs: tuple[tuple[str, float], ...] = ()

    def settings(self) -> Any:
        return gateway_settings(**dict(self.knobs))


def run_turns(cases: list[DevCase], policy: Policy, engines: Engines) -> list[TurnOutcome]:
    settings = policy.settings()
    out = []
    for case in cases:
        run = run_clip(
            case.audio,
            settings,
            smart=policy.smart,
            engines=engines,
            expects=case.expects,
            stop=_turn_done(case),
        )
        out.append(judge_turn(case, run))
    return out


def run_barge(cases: list[DevCase], policy: Policy, engines: Engines) -> list[BargeOutcome]:
    settings = policy.settings()
    return [
        judge_barge(
            c,
            run_clip(
                c.audio,
                settings,
                smart=policy.smart,
                engines=engines,
                playing=True,
                stop=_barge_done,
            ),
        )
        for c in cases
    ]


@dataclass
class Summary:
    pause_turns: int
    cutoffs: int  # pause cases cut off
    short_cut: int  # short answers split (more speech came after an end)
    delays: list[float]
    missed: int  # turns that never ended within the clip
    reasons: dict[str, int]

    @property
    def p50(self) -> float:
        return percentile(self.delays, 50)

    @property
    def p95(self) -> float:
        return percentile(self.delays, 95)


def summarise(outcomes: list[TurnOutcome]) -> Summary:
    reasons: dict[str, int] = {}
    for o in outcomes:
        if o.reason:
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
    return Summary(
        pause_turns=sum(1 for o in outcomes if o.kind == "pause"),
        cutoffs=sum(1 for o in outcomes if o.kind == "pause" and o.cut),
        short_cut=sum(1 for o in outcomes if o.kind != "pause" and o.cut),
        delays=[o.delay_ms for o in outcomes if o.delay_ms is not None],
        missed=sum(1 for o in outcomes if o.delay_ms is None),
        reasons=reasons,
    )


# --------------------------------------------------------------------------- tables


def policy_table(rows: list[tuple[str, Summary]]) -> str:
    out = [
        "| policy | false cut-offs (pause turns) | short answers split | delay after true end p50 | p95 | turns | not ended |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, s in rows:
        out.append(
            f"| {label} | {s.cutoffs} of {s.pause_turns} | {s.short_cut} | {s.p50:.0f} ms "
            f"| {s.p95:.0f} ms | {len(s.delays) + s.missed} | {s.missed} |"
        )
    return "\n".join(out)


def curve_table(rows: list[tuple[Policy, Summary]]) -> str:
    out = [
        "| probe_after_ms | model_threshold | unsure_max_ms | cut-offs / delay p50 / p95 |",
        "| ---: | ---: | ---: | --- |",
    ]
    for policy, s in rows:
        k = dict(policy.knobs)
        out.append(
            f"| {k['eot_probe_after_ms']:.0f} | {k['eot_model_threshold']:.2f} "
            f"| {k['eot_unsure_max_ms']:.0f} | {s.cutoffs} / {s.p50:.0f} ms / {s.p95:.0f} ms |"
        )
    return "\n".join(out)


def barge_table(outcomes: list[BargeOutcome]) -> str:
    back = [o for o in outcomes if o.kind == "backchannel"]
    inter = [o for o in outcomes if o.kind == "interruption"]
    clears = [o.clear_ms for o in inter if o.clear_ms is not None]
    stopped = [o.id for o in back if o.stopped]
    missed = [o.id for o in inter if not o.stopped]
    rows = [
        "| over playing audio | result |",
        "| --- | --- |",
        f"| backchannels that stop playback | {len(stopped)} of {len(back)}"
        + (f" ({', '.join(stopped)})" if stopped else "")
        + " |",
        f"| interruptions that barge in | {len(clears)} of {len(inter)}"
        + (f" (missed: {', '.join(missed)})" if missed else "")
        + " |",
        f"| `clear` after the interruption's speech onset p50 / p95 | "
        f"{percentile(clears, 50):.0f} ms / {percentile(clears, 95):.0f} ms |",
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------- main


def curve_policies(default_probe_after: float, probe_afters: list[float]) -> list[Policy]:
    """model_threshold × unsure_max_ms at the default probe_after_ms, then each other
    probe_after_ms at the default threshold and unsure_max_ms (each probe_after_ms probes
    other audio, so it runs the models again: the costly knob)."""
    d = gateway_settings()
    grid = [
        (default_probe_after, th, unsure)
        for th, unsure in itertools.product((0.3, 0.5, 0.7), (600.0, 800.0, 1000.0, 1400.0))
    ]
    grid += [
        (pa, d.eot_model_threshold, d.eot_unsure_max_ms)
        for pa in probe_afters
        if pa != default_probe_after
    ]
    out = []
    for pa, th, unsure in grid:
        if pa > unsure:
            continue
        knobs = (
            ("eot_probe_after_ms", pa),
            ("eot_model_threshold", th),
            ("eot_unsure_max_ms", unsure),
        )
        out.append(Policy(f"pa{pa:.0f} th{th:.2f} u{unsure:.0f}", True, knobs))
    return out


def report(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cases = devset.load(root=Path(args.devset) if args.devset else None)
    turns = [c for c in cases if c.kind in ("pause", "short")]
    barges = [c for c in cases if c.kind in ("backchannel", "interruption")]
    if args.limit:
        turns, barges = turns[: args.limit], barges[: args.limit]
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    defaults = gateway_settings()
    engines = Engines(model_threads=defaults.turn_model_threads)
    smart = Policy("smart end of turn (gateway defaults)", True)
    silence = Policy(f"old rule: {defaults.end_silence_ms:.0f} ms of silence", False)
    smart_turns = run_turns(turns, smart, engines)
    silence_turns = run_turns(turns, silence, engines)
    curve: list[tuple[Policy, Summary]] = []
    if not args.no_curve:
        for policy in curve_policies(defaults.eot_probe_after_ms, args.probe_after):
            curve.append((policy, summarise(run_turns(turns, policy, engines))))
            print(f"  {policy.label}: done", file=sys.stderr, flush=True)
    barge = run_barge(barges, smart, engines)
    elapsed = time.perf_counter() - started
    load = f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}"
    s_smart, s_silence = summarise(smart_turns), summarise(silence_turns)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s_smart.reasons.items()))
    model_ms, stt_ms = engines.model_runs, engines.stt_runs
    engines.close()
    text = "\n\n".join(
        [
            f"**End of turn on the dev set** (`bench/eot_bench.py`, {len(turns)} turns: "
            f"{s_smart.pause_turns} with pauses inside, the rest short answers; "
            f"{dt.date.today().isoformat()}, {machine()}, {load}; the gateway's caller path on a "
            f"virtual clock, Smart Turn v3.2 ({len(model_ms)} runs, p50 "
            f"{percentile(model_ms, 50):.0f} ms) and Whisper tiny.en probes ({len(stt_ms)} "
            f"runs, p50 {percentile(stt_ms, 50):.0f} ms, p95 {percentile(stt_ms, 95):.0f} ms) "
            "answering after their measured time on this CPU)",
            policy_table([(smart.label, s_smart), (silence.label, s_silence)]),
            f"Why the smart policy ended the turns: {reasons}.",
            *(
                [
                    "Trade-off (smart policy; the knobs not shown at the gateway's defaults):",
                    curve_table(curve),
                ]
                if curve
                else []
            ),
            f"**Backchannels and interruptions over playing audio** ({len(barges)} clips, "
            "the gateway's barge-in gate with Whisper probes, same virtual clock)",
            barge_table(barge),
        ]
    )
    details = {
        "elapsed_s": round(elapsed, 1),
        "smart": [asdict(o) for o in smart_turns],
        "silence": [asdict(o) for o in silence_turns],
        "barge": [asdict(o) for o in barge],
        "curve": [
            {"knobs": dict(p.knobs), "cutoffs": s.cutoffs, "p50": s.p50, "p95": s.p95}
            for p, s in curve
        ],
        "model_ms": model_ms,
        "stt_ms": stt_ms,
    }
    return text, details


def main() -> None:
    parser = argparse.ArgumentParser(description="End-of-turn and barge-in bench (dev set).")
    parser.add_argument("--out", default="artifacts/bench/eot.md", help="markdown tables")
    parser.add_argument("--details", default="artifacts/bench/eot.json", help="per-case JSON")
    parser.add_argument(
        "--probe-after",
        type=float,
        nargs="+",
        default=[300.0],
        help="other probe_after_ms values for the trade-off curve, at the default threshold "
        "and unsure_max_ms (each one runs the models again)",
    )
    parser.add_argument("--no-curve", action="store_true", help="skip the trade-off curve")
    parser.add_argument("--devset", help="a dev set built with --out (default: the packaged one)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases of each set")
    args = parser.parse_args()
    configure_logging("eot-bench", level="WARNING", json=False)
    text, details = report(args)
    print(text)
    for path, body in ((args.out, text + "\n"), (args.details, json.dumps(details, indent=1))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(body)
    print(f"\n({details['elapsed_s']} s; written {args.out}, {args.details})", file=sys.stderr)


if __name__ == "__main__":
    main()

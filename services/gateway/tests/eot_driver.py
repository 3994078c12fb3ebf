"""A test driver for the end-of-turn decision: it plays a timeline of speech spans and
pauses as 20 ms frames into :class:`EndOfTurn` and answers its probes like the gateway
does: the turn model's P(complete) after ``model_ms`` and the speculative transcript (the
words said so far, as Whisper writes them) after ``stt_ms``. Its clock is simulated.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from dealerline_common.speculation import Expects
from dealerline_gateway.endofturn import End, EndOfTurn, EotConfig, Probe

FRAME_MS = 20
T0 = 1_700_000_000.0  # wall-clock seconds, as on the wire
CFG = EotConfig()


@dataclass(frozen=True)
class Speech:
    ms: int
    text: str  # everything said so far, as Whisper would write it at the end of this span


@dataclass(frozen=True)
class Pause:
    ms: int


@dataclass
class Run:
    end: End | None
    speech_end: float  # the last voiced frame
    probes: list[Probe] = field(default_factory=list)
    stale: int = 0  # answers ignored because the caller had gone on
    ended_in_pause: int | None = None  # index of the inner pause it ended in (a cut-off)

    @property
    def delay_ms(self) -> float:
        assert self.end is not None
        return round((self.end.at - self.speech_end) * 1000, 3)


def _frames(timeline: Sequence[Speech | Pause], tail_ms: int) -> list[tuple[bool, str, int]]:
    """(voiced, text so far, index of the pause or -1) per frame."""
    frames: list[tuple[bool, str, int]] = []
    text = ""
    for i, seg in enumerate([*timeline, Pause(tail_ms)]):
        if isinstance(seg, Speech):
            text = seg.text
        for _ in range(seg.ms // FRAME_MS):
            frames.append((isinstance(seg, Speech), text, -1 if isinstance(seg, Speech) else i))
    return frames


def drive(
    timeline: Sequence[Speech | Pause],
    *,
    expects: Expects | None = None,
    probs: Sequence[float | None] = (0.8,),
    model_ms: float | None = 60.0,
    stt_ms: float | None = 380.0,
    config: EotConfig = CFG,
    eot: EndOfTurn | None = None,
    tail_ms: int = 5000,
) -> Run:
    """Play ``timeline`` (then ``tail_ms`` of silence); ``probs[n]`` answers the n-th
    probe (the last one repeats; None: the model never answers)."""
    eot = eot if eot is not None else EndOfTurn(config)
    eot.expect(expects)
    frames = _frames(timeline, tail_ms)
    last_speech = max(i for i, (voiced, _, _) in enumerate(frames) if voiced)
    run = Run(None, T0 + last_speech * FRAME_MS / 1000)
    pending: list[tuple[float, int, str, int, float | str]] = []
    for k, (voiced, text, pause_index) in enumerate(frames):
        now = T0 + k * FRAME_MS / 1000
        while pending and pending[0][0] <= now:
            due, _, what, pause_id, value = heapq.heappop(pending)
            if what == "model":
                decision = eot.model(pause_id, float(value), due)
            else:
                decision = eot.transcript(pause_id, str(value), due)
            run.stale += decision is None and pause_id != eot.pause_id
            if isinstance(decision, End):
                return _ended(run, decision, pause_index, frames)
        if voiced:
            eot.voiced(now)
            continue
        decision = eot.silent(now)
        if isinstance(decision, End):
            return _ended(run, decision, pause_index, frames)
        if isinstance(decision, Probe):
            n = len(run.probes)
            run.probes.append(decision)
            prob = probs[min(n, len(probs) - 1)]
            if model_ms is not None and prob is not None:
                heapq.heappush(
                    pending, (now + model_ms / 1000, 2 * n, "model", decision.pause_id, prob)
                )
            if stt_ms is not None:
                heapq.heappush(
                    pending, (now + stt_ms / 1000, 2 * n + 1, "text", decision.pause_id, text)
                )
    return run


def _ended(run: Run, end: End, pause_index: int, frames: list[tuple[bool, str, int]]) -> Run:
    run.end = end
    final_pause = frames[-1][2]
    if pause_index != final_pause:
        run.ended_in_pause = pause_index
    return run


def assert_ends_after_speech(run: Run) -> End:
    assert run.end is not None, "the turn never ended"
    assert run.ended_in_pause is None, f"cut off in pause {run.ended_in_pause}: {run.end}"
    assert run.end.at > run.speech_end
    return run.end

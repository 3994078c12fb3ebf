"""The entity judge and the end-of-turn decision on the development set's audio through
the real Whisper tiny.en (the model the STT workers run), not on hand-written text.

Pause cases of libs/sim's development set whose answer has a fixed form (a phone number,
a VIN, a plate, an email address: complete or not by its form alone) are cut where the
gateway would probe them
(``probe_after_ms`` into each pause, and after the true end) and transcribed from its
8 kHz mu-law like ``stt.probe`` does. The decision then replays the case's timeline with
those transcripts and a turn model fooled by every pause (P(complete) 0.8 everywhere), so
the words alone must keep the turn open. The manifest is read by path (no import of the
simulator); the times asserted are the simulated clock's.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from eot_driver import CFG, FRAME_MS, Pause, Speech, drive

from dealerline_common.audio import ulaw_to_float
from dealerline_common.entities import judge
from dealerline_common.models import bundled_whisper_path

DEVSET = Path(__file__).resolve().parents[3] / "libs/sim/src/dealerline_sim/data/devset"
WHISPER_RATE = 16000
PER_KIND = 2  # cases of each kind (each costs ~4 transcriptions of ~0.4 s)
# Open answers (a date, a mileage, a name) can be whole at a pause ("next Tuesday," | "at
# nine thirty"): the set keeps such hard cases on purpose, so they are not judged here.
FIXED_FORM = ("phone", "vin", "plate", "email")


@functools.cache
def _whisper() -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(bundled_whisper_path()), device="cpu", compute_type="int8", cpu_threads=2
    )


def transcribe(ulaw: bytes) -> str:
    """As the STT worker decodes a probe: greedy, English, Whisper's own VAD pass."""
    segments, _ = _whisper().transcribe(
        ulaw_to_float(ulaw, WHISPER_RATE),
        language="en",
        beam_size=1,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=True,
    )
    return " ".join(s.text.strip() for s in segments).strip()


def _cases() -> list[dict[str, Any]]:
    manifest = json.loads((DEVSET / "manifest.json").read_text())
    taken: Counter[str] = Counter()
    picked = []
    for record in manifest["cases"]:
        kind = record["expects"]
        if record["kind"] == "pause" and kind in FIXED_FORM and taken[kind] < PER_KIND:
            taken[kind] += 1
            picked.append(record)
    return picked


def _cut(ulaw: bytes, ms: float) -> bytes:
    return ulaw[: int(ms * 8)]


def _probe_texts(record: dict[str, Any]) -> tuple[list[str], str]:
    """What the probes would read: at each pause, and after the true end."""
    ulaw = (DEVSET / record["audio"]).read_bytes()
    inner = [
        transcribe(_cut(ulaw, start + CFG.probe_after_ms)) for start, _ in record["pause_spans_ms"]
    ]
    return inner, transcribe(_cut(ulaw, record["true_end_ms"] + CFG.probe_after_ms))


def _timeline(record: dict[str, Any], inner: list[str], final: str) -> list[Speech | Pause]:
    def frames(ms: float) -> int:
        return max(FRAME_MS, round(ms / FRAME_MS) * FRAME_MS)

    timeline: list[Speech | Pause] = []
    at = record["speech_start_ms"]
    for (start, end), text in zip(record["pause_spans_ms"], inner, strict=True):
        timeline += [Speech(frames(start - at), text), Pause(frames(end - start))]
        at = end
    timeline.append(Speech(frames(record["true_end_ms"] - at), final))
    return timeline


@pytest.fixture(scope="module")
def heard() -> list[tuple[dict[str, Any], list[str], str]]:
    return [(record, *_probe_texts(record)) for record in _cases()]


def test_whisper_transcripts_of_pauses_are_not_whole_answers(
    heard: list[tuple[dict[str, Any], list[str], str]],
) -> None:
    assert {r["expects"] for r, _, _ in heard} == set(FIXED_FORM)
    cut = [
        (r["id"], t) for r, inner, _ in heard for t in inner if judge(r["expects"], t) == "complete"
    ]
    assert cut == []
    # phone numbers come through whole; VINs and addresses are often misheard (then the
    # turn waits entity_max_ms, bounded)
    phones = [final for r, _, final in heard if r["expects"] == "phone"]
    assert all(judge("phone", final) == "complete" for final in phones), phones


def test_the_decision_on_whisper_transcripts_waits_for_the_whole_answer(
    heard: list[tuple[dict[str, Any], list[str], str]],
) -> None:
    cut_off, delays = [], []
    for record, inner, final in heard:
        run = drive(_timeline(record, inner, final), expects=record["expects"], probs=(0.8,))
        assert run.end is not None
        if run.ended_in_pause is not None:
            cut_off.append(record["id"])
        else:
            delays.append(run.delay_ms)
    assert cut_off == []
    # a whole answer ends as soon as its words arrive; a misheard one waits the maximum
    assert all(d in (CFG.probe_after_ms + 380, CFG.entity_max_ms) for d in delays), delays
    assert min(delays) == CFG.probe_after_ms + 380

"""The endpointer state machine, frame by frame, with an injected clock."""

from __future__ import annotations

import pytest
from gw_testkit import silence, voiced_signal

from dealerline_common import audio
from dealerline_gateway.vad import (
    Discarded,
    Endpointer,
    EndpointerConfig,
    EnergyVad,
    SpeechStart,
    Utterance,
    WebRtcVad,
    make_vad,
)

CFG = EndpointerConfig(
    start_frames=3,
    start_window=5,
    end_silence_frames=10,
    min_speech_frames=5,
    preroll_frames=4,
    tail_frames=2,
    max_frames=100,
)


def frame(i: int) -> bytes:
    """A frame whose bytes say which frame it was (to check pre-roll and trimming)."""
    return bytes([i % 256]) * audio.FRAME_BYTES


def run(pattern: str, cfg: EndpointerConfig = CFG) -> tuple[Endpointer, list[tuple[int, object]]]:
    """Feed frames marked 'x' (voiced) or '.' (unvoiced); frame i arrives at t = i/50 s."""
    ep = Endpointer(cfg)
    events: list[tuple[int, object]] = []
    for i, ch in enumerate(pattern):
        for ev in ep.feed(frame(i), ch == "x", i * 0.02):
            events.append((i, ev))
    return ep, events


def test_onset_needs_enough_voiced_frames_in_window() -> None:
    _, events = run("....x.x...x..........")
    assert events == []  # never 3 voiced within 5 frames
    _, events = run("......x.xx")
    assert len(events) == 1
    i, ev = events[0]
    assert isinstance(ev, SpeechStart)
    assert i == 9 and ev.index == 9
    assert ev.first_voiced_index == 6
    assert ev.first_voiced_at == pytest.approx(0.12)


def test_utterance_has_preroll_trimmed_tail_and_timings() -> None:
    pattern = "." * 10 + "x" * 20 + "." * 12
    _, events = run(pattern)
    kinds = [type(e).__name__ for _, e in events]
    assert kinds == ["SpeechStart", "Utterance"]
    i, utt = events[1]
    assert isinstance(utt, Utterance)
    assert i == 29 + 10  # ten unvoiced frames after the last voiced one (29)
    assert utt.reason == "silence"
    assert utt.last_voiced_index == 29
    assert utt.start_index == 10 - 4  # four frames of pre-roll before the first voiced
    assert utt.audio[0] == 6  # the pre-roll frames are in the audio
    # audio runs to the last voiced frame plus two tail frames
    assert len(utt.audio) == (29 + 2 - 6 + 1) * audio.FRAME_BYTES
    assert utt.audio[-1] == 31
    assert utt.voiced_frames == 20
    assert utt.speech_started_at == pytest.approx(0.20)
    assert utt.speech_end_at == pytest.approx(29 * 0.02)
    assert utt.ended_at == pytest.approx(39 * 0.02)
    assert utt.duration_ms == pytest.approx(26 * 20)


def test_short_pauses_do_not_split() -> None:
    pattern = "x" * 10 + "." * 9 + "x" * 10 + "." * 10
    _, events = run(pattern)
    utts = [e for _, e in events if isinstance(e, Utterance)]
    assert len(utts) == 1
    assert utts[0].voiced_frames == 20


def test_blip_is_discarded() -> None:
    _, events = run("xxx" + "." * 12)
    assert isinstance(events[0][1], SpeechStart)
    assert isinstance(events[1][1], Discarded)
    assert events[1][1].voiced_frames == 3


def test_max_length_cuts_and_continues() -> None:
    cfg = EndpointerConfig(
        start_frames=1, start_window=1, end_silence_frames=5, preroll_frames=0, max_frames=20
    )
    _, events = run("x" * 50 + "." * 6, cfg)
    utts = [e for _, e in events if isinstance(e, Utterance)]
    assert [u.reason for u in utts] == ["max_length", "max_length", "silence"]
    assert len(utts[0].audio) == 20 * audio.FRAME_BYTES
    assert sum(u.voiced_frames for u in utts) == 50


def test_flush_ends_speech_in_progress() -> None:
    ep, _ = run("x" * 8)
    assert ep.in_speech and ep.voiced_ms == 160
    ev = ep.flush(1.0)
    assert isinstance(ev, Utterance) and ev.reason == "flush"
    assert not ep.in_speech and ep.flush(2.0) is None


def test_from_ms() -> None:
    cfg = EndpointerConfig.from_ms(
        start_frames=3,
        start_window=5,
        end_silence_ms=600,
        min_speech_ms=100,
        preroll_ms=200,
        tail_ms=120,
        max_utterance_s=30,
    )
    assert (cfg.end_silence_frames, cfg.min_speech_frames, cfg.preroll_frames) == (30, 5, 10)
    assert cfg.max_frames == 1500
    with pytest.raises(ValueError):
        EndpointerConfig(start_frames=6, start_window=5)


def test_detectors_on_synthetic_voice_and_silence() -> None:
    speech = audio.frames(voiced_signal(0.5))
    quiet = audio.frames(silence(0.5))
    for vad in (WebRtcVad(3), EnergyVad(500), make_vad("webrtc", 2)):
        assert not any(vad.is_speech(audio.ulaw_to_pcm16(f)) for f in quiet), vad.name
        assert all(vad.is_speech(audio.ulaw_to_pcm16(f)) for f in speech), vad.name
        vad.reset()
    with pytest.raises(ValueError):
        make_vad("nope", 1)

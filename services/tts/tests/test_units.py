"""Pieces of the TTS worker that need no server or model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dealerline_common.settings import SettingsError, load_settings
from dealerline_tts.cancel import CancelledTurns
from dealerline_tts.engine import providers_for, trim_silence
from dealerline_tts.phrase_cache import PhraseCache, PhraseKey
from dealerline_tts.service import salvage_say
from dealerline_tts.settings import DEFAULT_PREWARM, TtsSettings
from dealerline_tts.text import normalize_text


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("An oil change is $49.95.", "An oil change is 49 dollars and 95 cents."),
        ("It's $1,200 or $1.", "It's 1200 dollars or 1 dollar."),
        ("Only $0.50 more.", "Only 50 cents more."),
        ("Tuesday at 9:30 AM works.", "Tuesday at 9 30 AM works."),
        ("See you at 10:05 a.m. tomorrow.", "See you at 10 oh 5 AM tomorrow."),
        ("We close at 5 p.m.", "We close at 5 PM."),
        ("Open 9:00am–5:30pm daily.", "Open 9 AM to 5 30 PM daily."),
        ("Come by 11:00.", "Come by 11 o'clock."),
        ("Call 555-123-4567.", "Call 5 5 5, 1 2 3, 4 5 6 7."),
        ("**Great!** Tires & brakes.", "Great! Tires and brakes."),
        ("See you soon 🙂", "See you soon"),
        ("A 2021 Toyota RAV4, 3rd visit.", "A 2021 Toyota RAV4, 3rd visit."),
    ],
)
def test_normalize_text(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cancelled_turns_expire_and_stay_bounded() -> None:
    clock = Clock()
    turns = CancelledTurns(ttl_s=10.0, capacity=3, clock=clock)
    turns.cancel_turn("s1", "t1")
    assert turns.is_cancelled("s1", "t1")
    assert not turns.is_cancelled("s1", "t2")
    assert not turns.is_cancelled("s2", "t1")
    clock.now = 11.0
    assert not turns.is_cancelled("s1", "t1")  # expired

    for i in range(5):
        turns.cancel_turn("s", f"t{i}")
    assert len(turns) == 3
    assert not turns.is_cancelled("s", "t0")  # the oldest went first
    assert turns.is_cancelled("s", "t4")


def test_a_stopped_session_cancels_every_turn_until_resumed() -> None:
    turns = CancelledTurns(clock=Clock())
    turns.cancel_turn("s1", "t1")
    turns.stop_session("s1")
    assert turns.is_cancelled("s1", "anything")
    turns.resume_session("s1")
    assert not turns.is_cancelled("s1", "t2")
    assert not turns.is_cancelled("s1", "t1")  # forgotten with the stopped stream


def test_a_stop_of_a_replaced_stream_does_not_mute_the_session() -> None:
    turns = CancelledTurns(clock=Clock())
    turns.resume_session("s1", "MZ1")
    turns.resume_session("s1", "MZ2")  # resumed after a human leg, maybe on another gateway
    assert turns.current_stream("s1") == "MZ2"
    assert turns.stop_session("s1", "MZ1") is False  # the old stream's stop, arriving late
    assert not turns.is_cancelled("s1", "t1")
    assert turns.stop_session("s1", "MZ2") is True  # the current stream's stop mutes
    assert turns.is_cancelled("s1", "t1")
    turns.resume_session("s1", "MZ3")
    assert turns.stop_session("s1") is True  # a stop naming no stream still mutes
    assert turns.is_cancelled("s1", "t1")


def test_a_stop_for_an_unknown_stream_mutes() -> None:
    turns = CancelledTurns(clock=Clock())
    assert turns.stop_session("s1", "MZ1") is True  # started before this worker was listening
    assert turns.is_cancelled("s1", "t1")
    turns.resume_session("s2", "MZ2")
    assert turns.stop_session("s1", "MZ9") is True  # another session's stream is irrelevant
    assert turns.current_stream("s1") is None


def test_remembered_streams_expire_and_stay_bounded() -> None:
    clock = Clock()
    turns = CancelledTurns(ttl_s=10.0, capacity=2, clock=clock)
    turns.resume_session("s1", "MZ1")
    clock.now = 11.0
    assert turns.current_stream("s1") is None  # expired: a stop is trusted again
    assert turns.stop_session("s1", "MZ0") is True

    for i in range(3):
        turns.resume_session(f"s{i}", f"MZ{i}")
    assert turns.current_stream("s0") is None  # the oldest went first
    assert (turns.current_stream("s1"), turns.current_stream("s2")) == ("MZ1", "MZ2")
    assert len(turns) == 0  # the streams are memory, not cancellations


def test_salvage_say_keeps_the_place_of_an_invalid_sentence() -> None:
    subject = "call.s1.say"
    base = {"session_id": "s1", "turn_id": "t1", "seq": 2, "text": "hi", "last": True}
    say = salvage_say(json.dumps(base | {"bogus": 1, "utterance_id": "u1"}).encode(), subject)
    assert say is not None
    assert (say.session_id, say.turn_id, say.utterance_id, say.seq, say.last, say.text) == (
        "s1",
        "t1",
        "u1",
        2,
        True,
        "",
    )
    no_last = {k: v for k, v in base.items() if k != "last"}
    assert salvage_say(json.dumps(no_last | {"timings": 5}).encode(), subject) is not None
    timed = salvage_say(json.dumps(base | {"timings": {"first_sentence": 1.5}}).encode(), subject)
    assert timed is not None and timed.timings.first_sentence == 1.5
    # What the turn asks for survives too: the gateway needs it from the closing answer.
    asks = salvage_say(json.dumps(base | {"expects": "vin", "x": 1}).encode(), subject)
    assert asks is not None and asks.expects == "vin"
    odd = salvage_say(json.dumps(base | {"expects": "shoe size"}).encode(), subject)
    assert odd is not None and odd.expects is None

    for bad in (
        b"{not a say",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps(base | {"session_id": "s2"}).encode(),  # not the subject's session
        json.dumps(base | {"type": "dealerline.say.v2"}).encode(),  # another message type
        json.dumps(base | {"seq": -1}).encode(),
        json.dumps(base | {"seq": "2"}).encode(),
        json.dumps(base | {"seq": True}).encode(),
        json.dumps(base | {"last": "yes"}).encode(),
        json.dumps(base | {"turn_id": ""}).encode(),
        json.dumps({k: v for k, v in base.items() if k != "turn_id"}).encode(),
    ):
        assert salvage_say(bad, subject) is None, bad
    assert salvage_say(json.dumps(base).encode(), "not.a.call.subject") is None


def test_trim_silence_keeps_a_short_lead_and_tail() -> None:
    rate = 24000
    tone = (0.5 * np.sin(np.arange(rate) * 0.1)).astype(np.float32)
    audio = np.concatenate([np.zeros(rate, np.float32), tone, np.zeros(rate, np.float32)])
    out = trim_silence(audio, rate, lead_ms=10, tail_ms=80)
    assert out.size == pytest.approx(rate + rate * 0.09, abs=4)
    assert trim_silence(np.zeros(100, np.float32), rate, 10, 80).size == 0


def test_providers() -> None:
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers_for("auto")[0][0] == "CUDAExecutionProvider"
    else:
        assert providers_for("auto") == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            providers_for("cuda")


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_VOICE", "jm_kumo")
    monkeypatch.setenv("TTS_SPEED", "1.1")
    settings = load_settings(TtsSettings)
    assert (settings.voice, settings.speed, settings.http_port) == ("jm_kumo", 1.1, 8083)
    monkeypatch.delenv("TTS_VOICE")
    assert load_settings(TtsSettings).voice == "jf_nezumi"
    monkeypatch.setenv("TTS_SPEED", "5")
    with pytest.raises(SettingsError, match="TTS_SPEED"):
        load_settings(TtsSettings)
    monkeypatch.delenv("TTS_SPEED")
    defaults = load_settings(TtsSettings)
    assert defaults.prewarm == list(DEFAULT_PREWARM)
    assert (defaults.cache_max_chars, defaults.cache_entries) == (80, 512)
    assert all(len(p) <= defaults.cache_max_chars for p in defaults.prewarm)
    assert {"Sure,", "Sure.", "Of course,", "No problem.", "One moment."} <= set(defaults.prewarm)
    monkeypatch.setenv("TTS_PREWARM", '["Sure,", "Hello, Ava here."]')
    monkeypatch.setenv("TTS_CACHE_ENTRIES", "8")
    settings = load_settings(TtsSettings)
    assert (settings.prewarm, settings.cache_entries) == (["Sure,", "Hello, Ava here."], 8)
    monkeypatch.setenv("TTS_PREWARM", "[]")
    assert load_settings(TtsSettings).prewarm == []


def test_phrase_cache_keeps_short_phrases_least_recently_used_first() -> None:
    cache = PhraseCache("jf_alpha", 1.0, max_chars=10, max_entries=2)
    assert cache.key(" Sure, ") == PhraseKey("Sure,", "jf_alpha", 1.0)
    assert cache.key("Far too long a phrase.") is None
    assert not cache.put("Far too long a phrase.", b"x")
    assert not cache.put("Empty.", b"")
    assert cache.put("Sure,", b"aa") and cache.put("Okay,", b"bbb")
    assert cache.get("Sure,") == b"aa"  # now the most recently used
    assert cache.put("Great,", b"c")  # a third: the least recently used goes
    assert "Okay," not in cache and cache.get("Okay,") is None
    assert ("Sure," in cache, "Great," in cache, len(cache), cache.bytes) == (True, True, 2, 3)
    assert cache.put("Sure,", b"dddd")  # replaced, not added
    assert (cache.get("Sure,"), len(cache), cache.bytes) == (b"dddd", 2, 5)
    assert cache.get("sure,") is None  # the text as it is spoken, not its lower case


def test_phrase_cache_stays_within_its_byte_budget() -> None:
    cache = PhraseCache("jf_alpha", 1.0, max_chars=40, max_entries=100, max_bytes=10)
    for i in range(6):
        assert cache.put(f"Phrase {i}.", bytes(4))
        assert cache.bytes <= 10
    assert len(cache) == 2 and "Phrase 5." in cache and "Phrase 3." not in cache
    assert not cache.put("Too big.", bytes(11))  # larger than the whole budget
    assert len(cache) == 2 and cache.bytes == 8


def test_phrase_cache_keys_by_voice_and_speed_and_can_be_off() -> None:
    alpha = PhraseCache("jf_alpha", 1.0)
    faster = PhraseCache("jf_alpha", 1.2)
    assert alpha.key("Sure,") != faster.key("Sure,")
    assert alpha.key("Sure,") != PhraseCache("jm_kumo", 1.0).key("Sure,")
    off = PhraseCache("jf_alpha", 1.0, max_entries=0)
    assert not off.cacheable("Sure,") and not off.put("Sure,", b"a") and len(off) == 0
    assert not PhraseCache("jf_alpha", 1.0, max_chars=0).cacheable("Sure,")


def test_phrase_cache_saves_and_loads_its_phrases(tmp_path: Path) -> None:
    cache = PhraseCache("jf_alpha", 1.0)
    cache.put("Sure,", b"\x01\x02\x03")
    cache.put("One moment.", bytes(range(256)) * 3)
    path = tmp_path / "deep" / "voice.phrases"
    cache.save(path)
    again = PhraseCache("jf_alpha", 1.0)
    assert again.load(path) == 2
    assert again.get("Sure,") == b"\x01\x02\x03"
    assert again.get("One moment.") == bytes(range(256)) * 3
    assert [p.name for p in path.parent.iterdir()] == ["voice.phrases"]  # no temp left

    small = PhraseCache("jf_alpha", 1.0, max_chars=5)  # keeps only what it would keep
    assert small.load(path) == 1 and "One moment." not in small
    assert PhraseCache("jf_alpha", 1.0).load(tmp_path / "missing.phrases") == 0
    data = path.read_bytes()
    for broken in (b"", b"garbage", data[:-1], data + b"x", data[:12] + b"{" + data[13:]):
        path.write_bytes(broken)
        assert PhraseCache("jf_alpha", 1.0).load(path) == 0, broken[:20]


def test_phrase_cache_keeps_other_voices_apart_and_saves_only_its_own(tmp_path: Path) -> None:
    cache = PhraseCache("jf_alpha", 1.0)
    cache.put("Sure,", b"default")
    cache.put("Sure,", b"english", voice="af_heart")
    assert cache.get("Sure,") == b"default" == cache.get("Sure,", "jf_alpha")
    assert cache.get("Sure,", "af_heart") == b"english"
    assert cache.get("Sure,", "bf_emma") is None
    assert len(cache) == 2
    path = tmp_path / "jf_alpha.phrases"  # the file's name says the worker's own voice
    cache.save(path)
    again = PhraseCache("jf_alpha", 1.0)
    assert again.load(path) == 1
    assert again.get("Sure,") == b"default" and again.get("Sure,", "af_heart") is None

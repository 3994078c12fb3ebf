import pytest
from pydantic import ValidationError

from dealerline_common import messages as m
from dealerline_common import subjects


def test_subjects_are_built_per_session() -> None:
    assert subjects.utterance("sess_1") == "call.sess_1.utterance"
    assert subjects.audio("sess_1") == "call.sess_1.audio"
    assert subjects.session_of("call.sess_1.say") == "sess_1"
    assert subjects.ALL_TRANSCRIPTS == "call.*.transcript"


@pytest.mark.parametrize("bad", ["a.b", "a b", "*", ">", "", "x" * 200])
def test_session_ids_that_would_break_subjects_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.say(bad)


def test_every_message_carries_a_versioned_type() -> None:
    t = m.Transcript(
        session_id="s",
        utterance_id="u",
        text="hi",
        audio_ms=1,
        stt_ms=1,
        model="x",
        timings=m.TurnTimings(speech_end=1.0),
    )
    raw = t.dumps()
    assert b'"type":"dealerline.transcript.v1"' in raw
    assert m.loads(m.Transcript, raw) == t


def test_unknown_fields_and_types_are_rejected() -> None:
    with pytest.raises(ValidationError):
        m.loads(
            m.Say,
            b'{"type":"dealerline.say.v1","session_id":"s","turn_id":"t","seq":0,"text":"x","bogus":1}',
        )
    with pytest.raises(ValidationError):
        m.parse_control(b'{"type":"dealerline.control.nope.v1","session_id":"s"}')


def test_control_union_dispatches_on_type() -> None:
    b = m.BargeIn(session_id="s", turn_id="t", heard_text="Hello")
    assert isinstance(m.parse_control(b.dumps()), m.BargeIn)
    s = m.StreamStarted(session_id="s", call_sid="CA1", stream_sid="MZ1", resumed=True)
    assert m.parse_control(s.dumps()) == s
    k = m.KeyPresses(session_id="s", stream_sid="MZ1", run=2, digits="12#", first_at=1.0)
    assert m.parse_control(k.dumps()) == k


def test_key_presses_carry_one_to_32_keypad_keys() -> None:
    for digits in ("", "12a", "1" * 33):
        with pytest.raises(ValidationError):
            m.KeyPresses(session_id="s", stream_sid="MZ1", run=1, digits=digits, first_at=1.0)
    with pytest.raises(ValidationError):
        m.KeyPresses(session_id="s", stream_sid="MZ1", run=0, digits="1", first_at=1.0)
    assert m.KeyPresses(
        session_id="s", stream_sid="MZ", run=1, digits="*0#" * 10 + "12", first_at=0
    )


def test_event_union_dispatches_on_type() -> None:
    e = m.LatencyEvent(session_id="s", turn_id="t", timings=m.TurnTimings(), stages_ms={})
    assert isinstance(m.parse_event(e.dumps()), m.LatencyEvent)


def test_audio_metadata_rides_in_a_header() -> None:
    meta = m.AudioMeta(
        session_id="s", turn_id="t", seq=2, last=False, text="Hi.", duration_ms=20, synth_ms=5
    )
    headers = meta.header()
    assert list(headers) == [m.META_HEADER]
    assert m.from_header(m.AudioMeta, headers) == meta
    with pytest.raises(ValueError):
        m.from_header(m.AudioMeta, {})


def test_stage_durations() -> None:
    t = m.TurnTimings(
        speech_end=10.0,
        utterance_published=10.6,
        transcript_published=11.0,
        first_token=11.5,
        first_sentence=11.7,
        first_audio=12.0,
        first_media=12.01,
    )
    stages = t.stages_ms()
    assert stages["endpointing"] == pytest.approx(600.0)
    assert stages["stt"] == pytest.approx(400.0)
    assert stages["total"] == pytest.approx(2010.0)
    assert "endpointing" not in m.TurnTimings(first_media=1.0).stages_ms()

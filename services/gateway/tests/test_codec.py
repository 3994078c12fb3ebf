"""The Twilio Media Streams frame codec: typed inbound events, outbound frames, and a
clear typed error for every frame that cannot be understood."""

from __future__ import annotations

import base64
import json

import pytest

from dealerline_gateway.codec import (
    BadFrame,
    ConnectedFrame,
    DtmfFrame,
    MarkFrame,
    MediaFrame,
    StartFrame,
    StopFrame,
    encode_clear,
    encode_mark,
    encode_media,
    parse_frame,
)

SID = "MZ0123456789abcdef0123456789abcdef"
CALL = "CA0123456789abcdef0123456789abcdef"


def frame(**body: object) -> str:
    return json.dumps(body)


# ----------------------------------------------------------------- inbound


def test_connected() -> None:
    parsed = parse_frame(frame(event="connected", protocol="Call", version="1.0.0"))
    assert parsed == ConnectedFrame(protocol="Call", version="1.0.0")
    assert parse_frame(frame(event="connected")) == ConnectedFrame()


def test_start() -> None:
    params = {"session_id": "sess_1", "token": "t0k", "from": "+14158675309"}
    parsed = parse_frame(
        frame(
            event="start",
            sequenceNumber="1",
            streamSid=SID,
            start={
                "streamSid": SID,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )
    )
    assert parsed == StartFrame(stream_sid=SID, call_sid=CALL, custom_parameters=params)


def test_start_stream_sid_from_either_place_and_parameters_optional() -> None:
    parsed = parse_frame(frame(event="start", start={"streamSid": SID}))
    assert parsed == StartFrame(stream_sid=SID, call_sid=None, custom_parameters={})
    odd = parse_frame(frame(event="start", streamSid=SID, start={"customParameters": [1]}))
    assert isinstance(odd, StartFrame) and odd.custom_parameters == {}


def test_media() -> None:
    audio = bytes(range(160))
    parsed = parse_frame(
        frame(
            event="media",
            streamSid=SID,
            media={
                "track": "inbound",
                "chunk": "3",
                "timestamp": "40",
                "payload": base64.b64encode(audio).decode(),
            },
        )
    )
    assert parsed == MediaFrame(payload=audio, timestamp=40.0, track="inbound")
    assert isinstance(parsed, MediaFrame) and parsed.inbound


def test_media_timestamp_is_optional_and_an_unreadable_one_is_ignored() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    for media in ({"payload": payload}, {"payload": payload, "timestamp": "soon"}):
        parsed = parse_frame(frame(event="media", media=media))
        assert parsed == MediaFrame(payload=b"\xff" * 160, timestamp=None, track="inbound")


def test_media_of_another_track_is_not_decoded() -> None:
    parsed = parse_frame(frame(event="media", media={"track": "outbound", "payload": "!!"}))
    assert parsed == MediaFrame(payload=b"", timestamp=None, track="outbound")
    assert isinstance(parsed, MediaFrame) and not parsed.inbound


def test_a_track_that_is_not_a_string_is_another_track() -> None:
    """A list or object as ``track`` is not the caller's audio: skipped, never a crash."""
    for track in (["inbound"], {"a": 1}):
        parsed = parse_frame(frame(event="media", media={"track": track, "payload": "!!"}))
        assert isinstance(parsed, MediaFrame) and parsed.payload == b"" and not parsed.inbound


def test_dtmf_mark_stop() -> None:
    dtmf = {"track": "inbound_track", "digit": "5"}
    assert parse_frame(frame(event="dtmf", dtmf=dtmf)) == DtmfFrame("5")
    assert parse_frame(frame(event="mark", mark={"name": "turn_a:0"})) == MarkFrame("turn_a:0")
    stop = parse_frame(frame(event="stop", stop={"accountSid": "AC0", "callSid": CALL}))
    assert stop == StopFrame(call_sid=CALL)
    assert parse_frame(frame(event="stop")) == StopFrame()


# ----------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("data", "reason", "event"),
    [
        (b"\x00\x01", "binary frame", None),
        ("{not json", "invalid_json", None),
        ("[1, 2]", "not_an_object", None),
        (frame(streamSid=SID), "unknown_event", None),
        (frame(event="clear"), "unknown_event", None),
        (frame(event=["media"]), "unknown_event", None),
        (frame(event="start"), "missing_start", "start"),
        (frame(event="start", start={}), "missing_streamSid", "start"),
        (frame(event="media"), "missing_media", "media"),
        (frame(event="media", media={"track": "inbound"}), "missing_payload", "media"),
        (frame(event="media", media={"payload": "not base64!"}), "bad_base64", "media"),
        (frame(event="dtmf", dtmf="5"), "missing_dtmf", "dtmf"),
        (frame(event="dtmf", dtmf={"digit": ""}), "missing_dtmf.digit", "dtmf"),
        (frame(event="mark", mark={}), "missing_mark.name", "mark"),
        (frame(event="mark"), "missing_mark", "mark"),
    ],
)
def test_malformed_frames_raise_bad_frame(data: str | bytes, reason: str, event: str) -> None:
    with pytest.raises(BadFrame) as caught:
        parse_frame(data)
    assert caught.value.reason == reason
    assert caught.value.event == event
    assert str(caught.value) == reason


# ----------------------------------------------------------------- outbound


def test_outbound_frames_are_compact_json() -> None:
    assert encode_clear(SID) == '{"event":"clear","streamSid":"' + SID + '"}'
    assert json.loads(encode_mark(SID, "turn_a:1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "turn_a:1"},
    }
    media = json.loads(encode_media(SID, b"\x11\x22"))
    assert media == {"event": "media", "streamSid": SID, "media": {"payload": "ESI="}}
    assert " " not in encode_media(SID, b"\x00" * 320)


def test_round_trips() -> None:
    """What the gateway sends parses back to what it meant (Twilio echoes marks as sent)."""
    audio = bytes(range(256)) + b"\xff" * 64
    assert parse_frame(encode_media(SID, audio)) == MediaFrame(audio, None, "inbound")
    assert parse_frame(encode_mark(SID, "turn_b:7")) == MarkFrame("turn_b:7")
    with pytest.raises(BadFrame, match="unknown_event"):
        parse_frame(encode_clear(SID))  # Twilio never sends clear

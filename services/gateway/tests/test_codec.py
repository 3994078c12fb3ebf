"""The Twilio Media Streams frame codec: typed inbound events, outbound frames, and a
clear typed error for every frame that cannot be understood."""

from __future__ import annotations

import base64
import json

import pytest

from dealerline_gateway.codec import (
    MAX_PAYLOAD_BYTES,
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
    media_encoder,
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


@pytest.mark.parametrize("sid", [SID, 'odd "sid" \\ é\n', None])
def test_a_streams_media_encoder_writes_what_json_would(sid: str | None) -> None:
    """The per-stream template gives the very text ``json.dumps`` does, whatever the sid."""
    encode = media_encoder(sid)
    for payload in (b"", b"\x11\x22", bytes(range(256)), b"\xff" * 320):
        body = {"event": "media", "streamSid": sid, "media": {"payload": ""}}
        body["media"] = {"payload": base64.b64encode(payload).decode()}
        expected = json.dumps(body, separators=(",", ":"))
        assert encode(payload) == expected == encode_media(sid, payload)
        assert json.loads(encode(payload))["streamSid"] == sid


def test_round_trips() -> None:
    """What the gateway sends parses back to what it meant (Twilio echoes marks as sent)."""
    audio = bytes(range(256)) + b"\xff" * 64
    assert parse_frame(encode_media(SID, audio)) == MediaFrame(audio, None, "inbound")
    assert parse_frame(encode_mark(SID, "turn_b:7")) == MarkFrame("turn_b:7")
    with pytest.raises(BadFrame, match="unknown_event"):
        parse_frame(encode_clear(SID))  # Twilio never sends clear


# ----------------------------------------------------------------- hostile input


def media_frame(payload: bytes, **media: object) -> str:
    return frame(
        event="media",
        streamSid=SID,
        media={"track": "inbound", "payload": base64.b64encode(payload).decode(), **media},
    )


def test_a_payload_over_the_bound_is_refused_before_decoding() -> None:
    """Twilio sends 160 bytes (20 ms) a frame: one payload may carry at most 1 s, so one
    frame cannot hold the caller's pipeline for seconds of audio."""
    assert MAX_PAYLOAD_BYTES == 8000
    one_second = parse_frame(media_frame(b"\x7f" * MAX_PAYLOAD_BYTES))
    assert isinstance(one_second, MediaFrame) and len(one_second.payload) == MAX_PAYLOAD_BYTES
    for size in (MAX_PAYLOAD_BYTES + 1, 10 * MAX_PAYLOAD_BYTES):
        with pytest.raises(BadFrame) as caught:
            parse_frame(media_frame(b"\x7f" * size))
        assert (caught.value.reason, caught.value.event) == ("oversized_payload", "media")
    # the bound is the caller's to set; the base64 text alone decides (not valid base64 here)
    with pytest.raises(BadFrame, match="oversized_payload"):
        parse_frame(
            frame(event="media", media={"payload": "!" * 1000}), max_payload=MAX_PAYLOAD_BYTES // 20
        )
    with pytest.raises(BadFrame, match="oversized_payload"):
        parse_frame(media_frame(b"\x7f" * 321), max_payload=320)


def test_a_timestamp_that_is_not_finite_is_ignored() -> None:
    """An infinite timestamp made the silence fill-in compute int(nan) and raise."""
    for ts in ("1e999", "-1e999", "NaN", "Infinity", 10**400, [1], None, True):
        parsed = parse_frame(media_frame(b"\xff" * 160, timestamp=ts))
        assert isinstance(parsed, MediaFrame)
        assert parsed.timestamp is None or parsed.timestamp == 1.0, ts  # True reads as 1


def test_json_nested_past_the_parser_is_invalid_json() -> None:
    """RecursionError from the JSON parser is a malformed frame, not a handler crash."""
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(BadFrame, match="invalid_json"):
        parse_frame(deep)
    with pytest.raises(BadFrame, match="invalid_json"):
        parse_frame('{"event": "media", "media": ' + "{" * 100_000)


def test_a_frame_naming_another_stream_is_wrong_stream() -> None:
    other = "MZ" + "f" * 32
    for event, body in (
        ("media", {"media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}),
        ("mark", {"mark": {"name": "turn_a:0"}}),
        ("dtmf", {"dtmf": {"digit": "1"}}),
        ("stop", {"stop": {"callSid": CALL}}),
    ):
        data = frame(event=event, streamSid=other, **body)
        with pytest.raises(BadFrame) as caught:
            parse_frame(data, stream_sid=SID)
        assert (caught.value.reason, caught.value.event) == ("wrong_stream", event)
        # its own stream, no stream named, or no stream known yet: parsed as before
        assert parse_frame(frame(event=event, streamSid=SID, **body), stream_sid=SID)
        assert parse_frame(frame(event=event, **body), stream_sid=SID)
        assert parse_frame(data)

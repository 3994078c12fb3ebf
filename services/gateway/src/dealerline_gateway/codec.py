"""Twilio Media Streams frames, both ways, with no I/O.

Inbound text frames parse into typed events (:class:`ConnectedFrame`, :class:`StartFrame`,
:class:`MediaFrame`, :class:`DtmfFrame`, :class:`MarkFrame`, :class:`StopFrame`); a frame
that cannot be understood raises :class:`BadFrame` with a short ``reason`` (the label the
gateway counts it under) and, when it got that far, the frame's ``event``. Outbound frames
(``media``, ``mark``, ``clear``) are built as compact JSON text.

Media of a track other than the caller's (``inbound``; Twilio sends only that one on a
bidirectional stream) is returned undecoded, with an empty payload: nobody listens to it.

Hostile input is bounded here, before any work is done on it: a media payload longer than
``max_payload`` bytes (Twilio sends 160, 20 ms; the gateway allows 1 s) is refused as
``oversized_payload`` from the length of its base64 text, undecoded, so one frame cannot
carry seconds of audio into the caller's pipeline; JSON nested too deep for the parser is
``invalid_json``; a timestamp that is not a finite number is ignored; once the stream is
known, a frame naming another ``streamSid`` is ``wrong_stream``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

INBOUND_TRACKS = frozenset({"inbound", "inbound_track"})
# One media payload at most 1 s of 8 kHz mu-law (Twilio sends 160 bytes, 20 ms).
MAX_PAYLOAD_BYTES = 8000


class BadFrame(Exception):
    """A frame that cannot be understood. ``event`` is its ``event`` field once known."""

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event = event


@dataclass(frozen=True)
class ConnectedFrame:
    protocol: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class StartFrame:
    stream_sid: str
    call_sid: str | None = None
    # The TwiML ``<Parameter>``s, as Twilio sent them (values are normally strings).
    custom_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaFrame:
    payload: bytes  # mu-law; empty for a track other than the caller's
    timestamp: float | None = None  # ms since the stream started, when readable
    track: str = "inbound"

    @property
    def inbound(self) -> bool:
        return isinstance(self.track, str) and self.track in INBOUND_TRACKS


@dataclass(frozen=True)
class DtmfFrame:
    digit: str


@dataclass(frozen=True)
class MarkFrame:
    name: str


@dataclass(frozen=True)
class StopFrame:
    call_sid: str | None = None


InboundFrame = ConnectedFrame | StartFrame | MediaFrame | DtmfFrame | MarkFrame | StopFrame


# --------------------------------------------------------------------------- inbound


def parse_frame(
    data: str | bytes, *, stream_sid: str | None = None, max_payload: int = MAX_PAYLOAD_BYTES
) -> InboundFrame:
    """One WebSocket message from Twilio; raises :class:`BadFrame`. ``stream_sid``: the
    stream's own, once started (a frame naming another one is ``wrong_stream``);
    ``max_payload``: the longest media payload accepted, in bytes."""
    if not isinstance(data, str):
        raise BadFrame("binary frame")
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        raise BadFrame("invalid_json") from None
    if not isinstance(frame, dict):
        raise BadFrame("not_an_object")
    event = frame.get("event")
    parse = _PARSERS.get(event) if isinstance(event, str) else None
    if parse is None:
        raise BadFrame("unknown_event")
    if stream_sid is not None and event not in ("connected", "start"):
        named = frame.get("streamSid")
        if named is not None and named != stream_sid:
            raise BadFrame("wrong_stream", event)
    try:
        if parse is _media:
            return _media(frame, max_payload)
        return parse(frame)
    except BadFrame as exc:
        raise BadFrame(exc.reason, event) from None


def _connected(frame: dict[str, Any]) -> ConnectedFrame:
    return ConnectedFrame(_opt_str(frame.get("protocol")), _opt_str(frame.get("version")))


def _start(frame: dict[str, Any]) -> StartFrame:
    start = _obj(frame, "start")
    stream_sid = _str(frame.get("streamSid") or start.get("streamSid"), "streamSid")
    params = start.get("customParameters")
    return StartFrame(
        stream_sid=stream_sid,
        call_sid=_opt_str(start.get("callSid")),
        custom_parameters=params if isinstance(params, dict) else {},
    )


def _media(frame: dict[str, Any], max_payload: int = MAX_PAYLOAD_BYTES) -> MediaFrame:
    media = _obj(frame, "media")
    track = media.get("track", "inbound")
    if not isinstance(track, str) or track not in INBOUND_TRACKS:
        return MediaFrame(b"", None, str(track))
    payload = _str(media.get("payload"), "payload")
    if len(payload) > 4 * math.ceil(max_payload / 3):  # base64's length, before decoding
        raise BadFrame("oversized_payload")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadFrame("bad_base64") from None
    if len(data) > max_payload:
        raise BadFrame("oversized_payload")
    return MediaFrame(data, _timestamp(media), track)


def _timestamp(media: dict[str, Any]) -> float | None:
    """Milliseconds since the stream started, when it is a finite number."""
    try:
        ts = float(media["timestamp"]) if "timestamp" in media else None
    except (TypeError, ValueError, OverflowError):
        return None
    return ts if ts is not None and math.isfinite(ts) else None


def _dtmf(frame: dict[str, Any]) -> DtmfFrame:
    return DtmfFrame(_str(_obj(frame, "dtmf").get("digit"), "dtmf.digit"))


def _mark(frame: dict[str, Any]) -> MarkFrame:
    return MarkFrame(_str(_obj(frame, "mark").get("name"), "mark.name"))


def _stop(frame: dict[str, Any]) -> StopFrame:
    stop = frame.get("stop")
    return StopFrame(_opt_str(stop.get("callSid")) if isinstance(stop, dict) else None)


_PARSERS: dict[str, Callable[[dict[str, Any]], InboundFrame]] = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "dtmf": _dtmf,
    "mark": _mark,
    "stop": _stop,
}


def _obj(frame: dict[str, Any], key: str) -> dict[str, Any]:
    value = frame.get(key)
    if not isinstance(value, dict):
        raise BadFrame(f"missing_{key}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadFrame(f"missing_{what}")
    return value


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------- outbound


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def encode_media(stream_sid: str | None, payload: bytes) -> str:
    """Audio for Twilio to play (mu-law, 8 kHz)."""
    return media_encoder(stream_sid)(payload)


def media_encoder(stream_sid: str | None) -> Callable[[bytes], str]:
    """:func:`encode_media` for one stream, its JSON around the payload built once: the
    text is the same, without a ``json.dumps`` per 20 ms message (base64 needs no
    escaping)."""
    head = _dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": ""}})
    prefix, suffix = head[: -len('"}}')], '"}}'
    b64encode = base64.b64encode

    def encode(payload: bytes) -> str:
        return prefix + b64encode(payload).decode("ascii") + suffix

    return encode


def encode_mark(stream_sid: str | None, name: str) -> str:
    """A mark Twilio echoes back once the audio sent before it has played (or was cleared)."""
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str | None) -> str:
    """Drop the audio Twilio has buffered; it echoes the pending marks."""
    return _dumps({"event": "clear", "streamSid": stream_sid})

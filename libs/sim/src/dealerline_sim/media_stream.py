"""The Media Streams wire format, as Twilio speaks it on a bidirectional stream.

Builds the JSON messages Twilio sends (``connected``, ``start``, ``media``, ``mark`` echoes,
``dtmf``, ``stop``) and checks the ones a server sends back: only JSON text frames with
``event`` ``media`` (a non-empty base64 ``media.payload``), ``mark`` (a ``mark.name``) or
``clear``, each naming the stream's ``streamSid``. Anything else is a protocol error, which
Twilio reports as error 31924.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from dealerline_common.audio import SAMPLE_RATE

__all__ = [
    "DTMF_DIGITS",
    "TWILIO_WS_USER_AGENT",
    "Clear",
    "Mark",
    "Media",
    "ProtocolViolation",
    "ServerEvent",
    "connected_message",
    "dtmf_message",
    "mark_message",
    "media_message",
    "parse_event",
    "parse_frame",
    "protocol_error",
    "start_message",
    "stop_message",
]

DTMF_DIGITS: Final = frozenset("0123456789*#")
TWILIO_WS_USER_AGENT: Final = "Twilio.TmeWs/1.0"


# -- Twilio → server ------------------------------------------------------------------------


def connected_message() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_message(
    seq: str, *, account_sid: str, stream_sid: str, call_sid: str, parameters: dict[str, str]
) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": seq,
        "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(parameters),
            "mediaFormat": {
                "encoding": "audio/x-mulaw",
                "sampleRate": SAMPLE_RATE,
                "channels": 1,
            },
        },
    }


def media_message(
    seq: str, stream_sid: str, chunk: str, timestamp: str, payload: str
) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": seq,
        "streamSid": stream_sid,
        "media": {
            "track": "inbound",
            "chunk": chunk,
            "timestamp": timestamp,
            "payload": payload,
        },
    }


def mark_message(seq: str, stream_sid: str, name: str) -> dict[str, Any]:
    return {
        "event": "mark",
        "sequenceNumber": seq,
        "streamSid": stream_sid,
        "mark": {"name": name},
    }


def dtmf_message(seq: str, stream_sid: str, digit: str) -> dict[str, Any]:
    return {
        "event": "dtmf",
        "sequenceNumber": seq,
        "streamSid": stream_sid,
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def stop_message(seq: str, stream_sid: str, account_sid: str, call_sid: str) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": seq,
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    }


# -- server → Twilio ------------------------------------------------------------------------


class ProtocolViolation(Exception):
    """A message Twilio would reject (error 31924); ``str(exc)`` says what was wrong."""


@dataclass(frozen=True)
class Media:
    data: bytes


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Clear:
    pass


ServerEvent = Media | Mark | Clear


def protocol_error(what: str, raw: str | bytes) -> str:
    """The ``Call.protocol_errors`` line for a rejected message."""
    text = raw if isinstance(raw, str) else repr(raw[:80])
    return f"31924: {what}: {text[:300]}"


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """A WebSocket frame as a JSON object; raises :class:`ProtocolViolation` otherwise."""
    if isinstance(raw, bytes):
        raise ProtocolViolation("binary WebSocket frame (Twilio takes JSON text frames only)")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise ProtocolViolation("message is not JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolViolation("message is not a JSON object")
    return msg


def parse_event(msg: dict[str, Any], stream_sid: str) -> ServerEvent:
    """What a server message asks of the stream ``stream_sid``; raises
    :class:`ProtocolViolation` for an unknown event, another stream, or a bad body."""
    event = msg.get("event")
    if event not in ("media", "mark", "clear"):
        raise ProtocolViolation(f"unknown event {event!r}")
    if msg.get("streamSid") != stream_sid:
        raise ProtocolViolation(f"{event} with streamSid {msg.get('streamSid')!r}")
    if event == "media":
        return Media(_media_payload(msg))
    if event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str) or not name:
            raise ProtocolViolation("mark without mark.name string")
        return Mark(name)
    return Clear()


def _media_payload(msg: dict[str, Any]) -> bytes:
    media = msg.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        raise ProtocolViolation("media without media.payload string")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation("media.payload is not base64") from None
    if not data:
        raise ProtocolViolation("empty media.payload")
    return data

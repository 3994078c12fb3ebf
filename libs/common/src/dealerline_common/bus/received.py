"""Reading a message the bus delivered: its payload, its headers, when JetStream stored
it and which delivery attempt this is."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

__all__ = ["delivery_attempt", "headers_of", "msg_payload", "published_at"]


def delivery_attempt(msg: Msg) -> int:
    """1 for a first delivery, n for the n-th redelivery of a work message."""
    return msg.metadata.num_delivered if msg.metadata else 1


def published_at(msg: Msg) -> float | None:
    """When JetStream stored a work message (wall-clock seconds), for queue-wait metrics."""
    try:
        stamp = msg.metadata.timestamp if msg.metadata else None
    except Exception:  # not a JetStream message
        return None
    return stamp.timestamp() if stamp is not None else None


def headers_of(msg: Msg) -> dict[str, str]:
    return dict(msg.headers or {})


def msg_payload(msg: Msg) -> bytes:
    data: Any = msg.data
    return bytes(data)

"""Twilio-shaped identifiers: a two-letter prefix (``CA``, ``MZ``, ``AC``…) and 32 hex digits."""

from __future__ import annotations

import secrets

__all__ = ["new_sid"]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)

"""The conversation's naming conventions, in one place for every service that reads them.

- Turn ids: the agent names every turn deterministically, so a redelivered input gets
  the turn id of its first delivery and everything downstream (sentences ``{turn}:{seq}``,
  marks, latency, transcript rows) is keyed by it.
- Message ids: the LangChain messages a turn adds to the history are ``<turn>:user`` for
  what the caller said and ``<turn>:ai`` / ``<turn>:ai:<step>`` for each LLM step.
- Markers: the agent's own inputs to the LLM (``[CALL_STARTED]``,
  ``[ESCALATION_RETURNED:<reason>]``, ``[NOTIFICATION:<kind>:<value>]``…) are written as
  a user message but are not caller speech; the after-call record skips them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ----------------------------------------------------------------------------- turn ids

TURN_PREFIX = "turn-"


def turn_id_for_utterance(utterance_id: str) -> str:
    """The turn that answers a caller's utterance."""
    return f"{TURN_PREFIX}{utterance_id}"


def turn_id_for_stream(stream_sid: str) -> str:
    """The greeting turn of a media stream (a call's first, or its return from a person)."""
    return f"{TURN_PREFIX}{stream_sid}"


def turn_id_for_call(call_sid: str) -> str:
    """The greeting of a new call written at its incoming webhook, before the stream opens."""
    return f"{TURN_PREFIX}{call_sid}-greeting"


def turn_id_for_dtmf(stream_sid: str, seq: int) -> str:
    """The turn that answers the ``seq``-th run of key presses on a stream."""
    return f"{TURN_PREFIX}{stream_sid}-dtmf-{seq}"


def escalation_turn_id(task_id: str, status: str) -> str:
    """The id of the turn the agent speaks when escalation ``task_id`` reaches ``status``;
    the escalation service waits for this turn to have played before it moves the call."""
    return f"{TURN_PREFIX}esc-{task_id}-{status}"


# -------------------------------------------------------------------------- message ids

_USER = ":user"
_AI = ":ai"


def user_message_id(turn_id: str) -> str:
    return f"{turn_id}{_USER}"


def ai_message_id(turn_id: str, step: int = 0) -> str:
    """The id of the assistant message of ``step`` (0, 1, … one per LLM call) of a turn."""
    return f"{turn_id}{_AI}" if step == 0 else f"{turn_id}{_AI}:{step}"


def is_turn_ai_id(message_id: str | None, turn_id: str) -> bool:
    return message_id is not None and (
        message_id == f"{turn_id}{_AI}" or message_id.startswith(f"{turn_id}{_AI}:")
    )


@dataclass(frozen=True)
class MessageId:
    """A parsed history message id: which turn, and whether the caller or the agent spoke."""

    turn_id: str
    role: str  # "caller" | "agent"


def parse_message_id(message_id: str | None) -> MessageId | None:
    """``<turn>:user`` → caller, ``<turn>:ai[:n]`` → agent; anything else (tool results,
    ids of other writers) → None."""
    if not message_id:
        return None
    if message_id.endswith(_USER):
        return MessageId(message_id[: -len(_USER)], "caller")
    turn, sep, rest = message_id.partition(_AI)
    if sep and (rest == "" or (rest.startswith(":") and rest[1:].isdigit())):
        return MessageId(turn, "agent")
    return None


# ------------------------------------------------------------------------------ markers

CALL_STARTED = "[CALL_STARTED]"
CALL_RESUMED = "[CALL_RESUMED]"
MARKER_NAMES = ("CALL_STARTED", "CALL_RESUMED", "ESCALATION_RETURNED", "NOTIFICATION", "DTMF")
_MARKER = re.compile(r"\[(" + "|".join(MARKER_NAMES) + r")(:[^\]]*)?\]")
_ONLY_MARKERS = re.compile(r"^(\s*\[(" + "|".join(MARKER_NAMES) + r")(:[^\]]*)?\]\s*)+$")


def escalation_returned(reason: str) -> str:
    return f"[ESCALATION_RETURNED:{reason}]"


def notification_marker(kind: str, value: str) -> str:
    return f"[NOTIFICATION:{kind}:{value}]"


def dtmf_marker(digits: str) -> str:
    """The caller pressed ``digits`` on the keypad (one or more of ``0-9*#``)."""
    return f"[DTMF:{digits}]"


def markers_in(text: str) -> list[str]:
    """The marker names (``CALL_STARTED``, ``NOTIFICATION``…) that ``text`` carries."""
    return [m.group(1) for m in _MARKER.finditer(text)]


def is_only_markers(text: str) -> bool:
    """True when ``text`` is nothing but markers: the agent's input, not caller speech."""
    return bool(_ONLY_MARKERS.match(text))

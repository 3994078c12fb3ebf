"""Every NATS subject and JetStream name the fleet uses, built in one place.

Per-session subjects are ``call.<sid>.<kind>``; a session id never contains a dot, a
space or a wildcard, so it is checked before it is put into a subject.
"""

from __future__ import annotations

import re

_SID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

# JetStream streams (created idempotently by whoever starts first; see bus.ensure_streams).
STREAM_UTTERANCES = "DL_UTTERANCES"
STREAM_TRANSCRIPTS = "DL_TRANSCRIPTS"
STREAM_SAY = "DL_SAY"
STREAM_EVENTS = "DL_EVENTS"
STREAM_ESCALATIONS = "DL_ESCALATIONS"
STREAM_NOTIFY = "DL_NOTIFY"
# Turns the agent must take even if the replica that heard of them dies: greetings and
# spoken escalation outcomes (a work queue; published by the gateway and the escalation
# service, consumed by the agent group).
STREAM_AGENT_JOBS = "DL_AGENT_JOBS"

# Durable consumer / queue-group names: one per worker kind.
GROUP_STT = "stt"
GROUP_TTS = "tts"
GROUP_AGENT = "agent"
GROUP_ESCALATION = "escalation"

# The NATS key-value bucket holding one-time media-stream tokens.
KV_STREAM_TOKENS = "dl_stream_tokens"

ESCALATION_REQUEST = "escalation.request"
STAFF_DUTY = "staff.duty"
NOTIFY_EMAIL = "notify.email"
NOTIFY_SMS = "notify.sms"
ALL_NOTIFY = "notify.*"


def check_session_id(session_id: str) -> str:
    """Return the id unchanged, or raise ValueError if it cannot be part of a subject."""
    if not _SID.match(session_id):
        raise ValueError(f"invalid session id for a subject: {session_id!r}")
    return session_id


def _call(session_id: str, kind: str) -> str:
    return f"call.{check_session_id(session_id)}.{kind}"


def utterance(session_id: str) -> str:
    return _call(session_id, "utterance")


def transcript(session_id: str) -> str:
    return _call(session_id, "transcript")


def say(session_id: str) -> str:
    return _call(session_id, "say")


def audio(session_id: str) -> str:
    return _call(session_id, "audio")


def control(session_id: str) -> str:
    """Gateway → fleet: the stream started or stopped, barge-ins, key presses, turns played."""
    return _call(session_id, "control")


def command(session_id: str) -> str:
    """Fleet → the gateway holding the call: hang up after a turn."""
    return _call(session_id, "command")


def agent_job(session_id: str) -> str:
    """Gateway / escalation → agent, durable: a turn to take without a caller utterance
    (greet an incoming call or a started stream, speak an escalation outcome)."""
    return _call(session_id, "agent_job")


def escalation(session_id: str) -> str:
    return _call(session_id, "escalation")


def events(session_id: str) -> str:
    return _call(session_id, "events")


def staff_action(session_id: str) -> str:
    """Dashboard → escalation request/reply: claim or pass on a ringing escalation."""
    return _call(session_id, "staff")


def conference_name(session_id: str) -> str:
    """The Twilio conference that bridges the caller and the team member of a session
    (both legs' TwiML and the conference status callbacks name it)."""
    return f"support_{check_session_id(session_id)}"


def _all(kind: str) -> str:
    return f"call.*.{kind}"


ALL_UTTERANCES = _all("utterance")
ALL_TRANSCRIPTS = _all("transcript")
ALL_SAY = _all("say")
ALL_AUDIO = _all("audio")
ALL_CONTROL = _all("control")
ALL_COMMAND = _all("command")
ALL_ESCALATION = _all("escalation")
ALL_EVENTS = _all("events")
ALL_AGENT_JOBS = _all("agent_job")


def session_of(subject: str) -> str:
    """The session id inside a ``call.<sid>.<kind>`` subject."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != "call":
        raise ValueError(f"not a per-call subject: {subject!r}")
    return check_session_id(parts[1])


# Speculative transcription (dealerline_common.speculation): core request/reply, the
# ``stt`` workers answer as one queue group.
STT_PROBE = "stt.probe"
GROUP_STT_PROBE = "stt-probe"

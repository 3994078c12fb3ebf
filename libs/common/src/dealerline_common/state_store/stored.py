"""Decoding what a state store holds: the state document, its version, queued
notifications and task records. Bad data in a side key is logged and skipped, so one bad
entry never blocks every later turn; a bad document raises :class:`StateStoreError`."""

from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import ValidationError

from ..logs import get_logger
from ..messages import now
from ..state import BackgroundTask, ConversationState, Notification
from .errors import StateStoreError

__all__ = [
    "next_version",
    "parse_notifications",
    "parse_state",
    "parse_state_or_new",
    "parse_tasks",
    "state_with_version",
    "stored_version",
]

log = get_logger(__name__)


def parse_state(raw: str, key: str) -> ConversationState:
    try:
        return ConversationState.model_validate_json(raw)
    except ValidationError as exc:
        raise StateStoreError(f"stored state at {key!r} is not a valid ConversationState") from exc


def parse_state_or_new(raw: str | None, key: str, session_id: str) -> ConversationState:
    """The stored state, or a fresh one for a session that has none yet."""
    return parse_state(raw, key) if raw is not None else ConversationState(session_id=session_id)


def state_with_version(raw: str | None, key: str) -> tuple[ConversationState | None, int]:
    """The stored state and its version, or ``(None, 0)`` for a session that has none."""
    if raw is None:
        return None, 0
    state = parse_state(raw, key)
    return state, state.version


def next_version(state: ConversationState, expected_version: int) -> ConversationState:
    """``state`` as it is written over ``expected_version``: the next version, stamped now."""
    if expected_version < 0:
        raise ValueError(f"expected_version must be >= 0, got {expected_version!r}")
    return state.model_copy(update={"version": expected_version + 1, "updated_at": now()})


def stored_version(raw: str | None, key: str) -> int:
    """The version of a stored document without validating all of it (0 if absent)."""
    if raw is None:
        return 0
    try:
        doc = json.loads(raw)
        version = doc["version"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StateStoreError(f"stored state at {key!r} is not a versioned document") from exc
    if not isinstance(version, int):
        raise StateStoreError(f"stored state at {key!r} has a non-integer version")
    return version


def parse_notifications(raws: Iterable[str], session_id: str) -> list[Notification]:
    out: list[Notification] = []
    for raw in raws:
        try:
            out.append(Notification.model_validate_json(raw))
        except ValidationError:
            # One bad entry must not block every later turn's sync; it can never be
            # delivered, so it is logged and skipped.
            log.error("state_store.bad_notification", session_id=session_id, raw=raw[:200])
    return out


def parse_tasks(raws: Iterable[str | None], session_id: str) -> list[BackgroundTask]:
    out: list[BackgroundTask] = []
    for raw in raws:
        if raw is None:  # indexed but expired/deleted meanwhile
            continue
        try:
            out.append(BackgroundTask.model_validate_json(raw))
        except ValidationError:
            log.error("state_store.bad_task", session_id=session_id, raw=raw[:200])
    return out

"""The key layout of one session in a state store (the same for Redis and memory).

With an optional namespace prefix ``ns``::

    {ns}state:<sid>                    the document (JSON)
    {ns}notifications:<sid>            LIST of Notification JSON (RPUSH)
    {ns}delivered_notifications:<sid>  SET of notification ids already merged
    {ns}task:<sid>:<task_id>           one BackgroundTask (JSON)
    {ns}tasks:<sid>                    SET of task ids: an index, so a turn never SCANs
    {ns}reply:<sid>:<turn_id>          HASH seq -> sentence: a turn's reply log (HSETNX)
    {ns}replies:<sid>                  SET of turn ids with a reply log (an index, as tasks)

and, belonging to no session (shared by every process on the namespace)::

    {ns}window:<name>                  ZSET of event ids scored by time (count_in_window)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionKeys", "check_id", "window_key"]


def check_id(name: str, value: str) -> None:
    """Reject an empty or non-string session/task id before it becomes part of a key."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def window_key(ns: str, name: str) -> str:
    """The key of the counter ``name`` (see :meth:`StateStore.count_in_window`)."""
    check_id("name", name)
    return f"{ns}window:{name}"


@dataclass(frozen=True, slots=True)
class SessionKeys:
    state: str
    notifications: str
    delivered: str
    tasks: str  # index of task ids
    task_prefix: str
    replies: str  # index of turn ids with a reply log
    reply_prefix: str

    @classmethod
    def of(cls, ns: str, session_id: str) -> SessionKeys:
        return cls(
            state=f"{ns}state:{session_id}",
            notifications=f"{ns}notifications:{session_id}",
            delivered=f"{ns}delivered_notifications:{session_id}",
            tasks=f"{ns}tasks:{session_id}",
            task_prefix=f"{ns}task:{session_id}:",
            replies=f"{ns}replies:{session_id}",
            reply_prefix=f"{ns}reply:{session_id}:",
        )

    def task(self, task_id: str) -> str:
        return f"{self.task_prefix}{task_id}"

    def reply(self, turn_id: str) -> str:
        return f"{self.reply_prefix}{turn_id}"

    @property
    def fixed(self) -> tuple[str, str, str, str, str]:
        """The keys every session may have, whatever its tasks and turns (the two
        indexes last: tasks, then replies)."""
        return (self.state, self.notifications, self.delivered, self.tasks, self.replies)

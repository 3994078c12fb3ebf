"""The key layout of one session in a state store (the same for Redis and memory).

With an optional namespace prefix ``ns`` (which may not contain braces), every key of a
session carries the session id as its Redis Cluster hash tag, ``{<sid>}``, so all of them
live on one Cluster slot and multi-key steps (a Lua script given the session's keys) stay
on one node::

    {ns}state:{<sid>}                    the document (JSON)
    {ns}notifications:{<sid>}            LIST of Notification JSON (RPUSH)
    {ns}delivered_notifications:{<sid>}  SET of notification ids already merged
    {ns}tasks:{<sid>}                    SET of task ids: an index, so a turn never SCANs
    {ns}replies:{<sid>}                  SET of turn ids with a reply log (an index too)
    {ns}task:{<sid>}:<task_id>           one BackgroundTask (JSON)
    {ns}reply:{<sid>}:<turn_id>          HASH seq -> sentence: a turn's reply log (HSETNX)
    {ns}lease:{<sid>}                    the write lease under contention (a token, ~1 s)
    {ns}baton:{<sid>}                    LIST a lease's release feeds (BLPOP by waiters)

and, belonging to no session (shared by every process on the namespace)::

    {ns}window:<name>                    ZSET of event ids scored by time (count_in_window)

(Before the hash tags the session id stood bare, ``{ns}state:<sid>``: a deployment
upgraded mid-call starts the calls in flight afresh; their old keys expire with the TTL.)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionKeys", "check_id", "check_namespace", "check_session_id", "window_key"]


def check_id(name: str, value: str) -> None:
    """Reject an empty or non-string id before it becomes part of a key."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def check_session_id(session_id: str) -> None:
    """A session id is a key's whole hash tag: non-empty and without braces."""
    check_id("session_id", session_id)
    if "{" in session_id or "}" in session_id:
        raise ValueError(f"session_id may not contain braces, got {session_id!r}")


def check_namespace(namespace: str) -> None:
    """The namespace prefixes every key; a brace in it would become the hash tag."""
    if not isinstance(namespace, str):
        raise ValueError(f"namespace must be a string, got {namespace!r}")
    if "{" in namespace or "}" in namespace:
        raise ValueError(f"namespace may not contain braces, got {namespace!r}")


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
    replies: str  # index of turn ids with a reply log
    task_prefix: str
    reply_prefix: str
    lease: str
    baton: str

    @classmethod
    def of(cls, ns: str, session_id: str) -> SessionKeys:
        tag = f"{{{session_id}}}"
        return cls(
            state=f"{ns}state:{tag}",
            notifications=f"{ns}notifications:{tag}",
            delivered=f"{ns}delivered_notifications:{tag}",
            tasks=f"{ns}tasks:{tag}",
            replies=f"{ns}replies:{tag}",
            task_prefix=f"{ns}task:{tag}:",
            reply_prefix=f"{ns}reply:{tag}:",
            lease=f"{ns}lease:{tag}",
            baton=f"{ns}baton:{tag}",
        )

    def task(self, task_id: str) -> str:
        return f"{self.task_prefix}{task_id}"

    def reply(self, turn_id: str) -> str:
        return f"{self.reply_prefix}{turn_id}"

    @property
    def fixed(self) -> tuple[str, str, str, str, str]:
        """The keys every session may have, whatever its tasks and turns, in this order
        (the Lua scripts rely on it): state, notifications, delivered, tasks, replies."""
        return (self.state, self.notifications, self.delivered, self.tasks, self.replies)

    @property
    def all(self) -> tuple[str, ...]:
        """The fixed keys, then the write lease and its baton (short-lived, own TTL)."""
        return (*self.fixed, self.lease, self.baton)

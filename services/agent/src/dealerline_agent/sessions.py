"""This replica's bookkeeping of the calls it hears: one :class:`Session` per call (its
lock, the turn running, the stream it is on, what barge-ins said was heard), the calls
that hung up, and the sweep that forgets idle sessions.

A call's session opens when the gateway answers its incoming webhook (``CallIncoming``:
the greeting is written before the stream opens) or when its stream starts. A stopped
stream only makes the session idle: the call may come back on a new stream
(after a human leg) and needs its history. A periodic sweep forgets sessions that had no
turn and no activity for ``session_idle_ttl_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dealerline_common.logs import get_logger
from dealerline_common.messages import CallIncoming, StreamStarted, StreamStopped

from .metrics import AgentMetrics

log = get_logger(__name__)

_MAX_STOPPED = 10_000  # hung-up sessions remembered, so late transcripts start nothing
_MAX_CLOSED_STREAMS = 8  # stopped stream ids remembered per session


@dataclass
class Session:
    session_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    running_turn_id: str | None = None
    running_task: asyncio.Task[Any] | None = None
    generating: bool = False
    turns: int = 0
    last_turn_id: str | None = None
    last_result: str | None = None
    pending_heard: dict[str, str] = field(default_factory=dict)
    stream_sid: str | None = None  # the media stream of the latest StreamStarted
    # The call whose CallIncoming was heard: its greeting is written at the webhook, before
    # the stream opens (by the replica that has ``greeting_claimed``).
    incoming_call_sid: str | None = None
    greeting_claimed: bool = False
    streaming: bool = False  # a stream is up (False once it stopped)
    closed_streams: deque[str] = field(default_factory=lambda: deque(maxlen=_MAX_CLOSED_STREAMS))
    last_activity: float = field(default_factory=time.monotonic)
    # The running turn was cut short by the caller (barge-in, hang-up): it keeps what it did.
    # Any other cancel (lost job lease, drain deadline, crash) leaves the turn to the replica
    # that is handed its job, which resumes after the sentences already noted.
    cut_short: bool = False

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def cancel_running(self) -> bool:
        """Cancel the turn running now because the caller cut it short (barge-in,
        hang-up), if any; True when one was."""
        task = self.running_task
        if task is None or task.done():
            return False
        self.cut_short = True
        task.cancel()
        return True


class Sessions(Mapping[str, Session]):
    """The sessions by id (read-only as a mapping) and the calls that hung up."""

    def __init__(self, idle_ttl_s: float, metrics: AgentMetrics) -> None:
        self.idle_ttl_s = idle_ttl_s
        self.metrics = metrics
        self._by_id: dict[str, Session] = {}
        self._stopped: OrderedDict[str, float] = OrderedDict()

    def __getitem__(self, session_id: str) -> Session:
        return self._by_id[session_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, session_id: str) -> Session:
        """The session, created if needed, marked active now."""
        session = self._by_id.get(session_id)
        if session is None:
            session = self._by_id[session_id] = Session(session_id)
            self.metrics.active_sessions.set(len(self._by_id))
        session.touch()
        return session

    def is_current(self, session: Session) -> bool:
        """False once the sweep forgot ``session`` (a newer one may stand for the call)."""
        return self._by_id.get(session.session_id) is session

    def hung_up(self, session_id: str) -> bool:
        return session_id in self._stopped

    def not_streaming(self, session_id: str) -> bool:
        session = self._by_id.get(session_id)
        return self.hung_up(session_id) or (session is not None and not session.streaming)

    def call_incoming(self, incoming: CallIncoming) -> Session | None:
        """Record that the call's greeting is being written before its stream opens; None
        when the call already hung up. Idempotent (both control subscriptions call it).

        The session is not streaming yet: a caller who hangs up before the stream opens
        leaves a session without any stream, which the sweep forgets after the TTL."""
        sid = incoming.session_id
        if self.hung_up(sid):
            return None
        session = self.open(sid)
        session.incoming_call_sid = incoming.call_sid
        return session

    def stream_started(self, started: StreamStarted) -> Session | None:
        """Record ``started`` as the session's stream; None if that stream already stopped.

        Both control subscriptions call this and may do so in either order, so it is
        idempotent, and a start handled after the stop of the same stream is stale.
        """
        sid = started.session_id
        session = self.open(sid)
        if started.stream_sid in session.closed_streams:
            return None
        if session.stream_sid != started.stream_sid:
            session.stream_sid = started.stream_sid
            session.streaming = True
            self._stopped.pop(sid, None)
        return session

    def stream_stopped(self, stopped: StreamStopped) -> bool:
        """The stream ended (hang-up, or the call went to a human): stop talking, keep the
        history, and let the sweep forget the session if no stream comes back. False when
        the stop was of an earlier stream (ignored)."""
        sid = stopped.session_id
        session = self._by_id.get(sid)
        if session is not None and stopped.stream_sid is not None:
            session.closed_streams.append(stopped.stream_sid)
            if session.stream_sid is not None and stopped.stream_sid != session.stream_sid:
                # A late stop of the stream before the current one.
                log.info(
                    "stop of an earlier stream ignored",
                    session_id=sid,
                    stream_sid=stopped.stream_sid,
                    current=session.stream_sid,
                )
                self.metrics.control_ignored.labels("stale_stop").inc()
                return False
        self._note_hung_up(sid)
        if session is None:
            return True
        session.streaming = False
        session.touch()
        if session.cancel_running():
            self.metrics.turns_cancelled.labels("hangup").inc()
        log.info("session idle", session_id=sid, reason=stopped.reason)
        return True

    def _note_hung_up(self, sid: str) -> None:
        self._stopped[sid] = time.time()
        self._stopped.move_to_end(sid)
        while len(self._stopped) > _MAX_STOPPED:
            self._stopped.popitem(last=False)

    # ------------------------------------------------------------------ idle sessions

    def _expired(self, session: Session, now: float) -> bool:
        return session.running_task is None and now - session.last_activity >= self.idle_ttl_s

    async def sweep_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep(time.monotonic())
            except Exception:
                log.exception("session sweep failed")

    async def sweep(self, now: float) -> list[str]:
        """Forget every session idle for the TTL (monotonic ``now``): no turn running or
        waiting and no activity (stream start/stop, transcript, turn, barge-in) for that
        long. A session whose stop was lost still goes, on its last activity. Returns the
        ids forgotten."""
        forgotten = []
        for session in list(self._by_id.values()):
            if session.lock.locked() or not self._expired(session, now):
                continue
            if await self._forget(session, now):
                forgotten.append(session.session_id)
        # Stops older than the TTL: their transcripts left the stream long ago.
        horizon = time.time() - self.idle_ttl_s
        for sid, at in list(self._stopped.items()):
            if at < horizon and sid not in self._by_id:
                del self._stopped[sid]
        return forgotten

    async def _forget(self, session: Session, now: float) -> bool:
        sid = session.session_id
        async with session.lock:
            # A turn that arrived meanwhile touched the session and now waits on the lock.
            if not self.is_current(session) or not self._expired(session, now):
                return False
            # The stored state stays (its TTL ends it): another replica or the escalation
            # service may still need it. Only this replica's bookkeeping goes.
            del self._by_id[sid]
            self.metrics.active_sessions.set(len(self._by_id))
        log.info("session forgotten", session_id=sid)
        return True

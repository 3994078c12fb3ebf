"""What a media session tells the fleet on ``call.<sid>.control`` while the call goes on:
barge-ins, turns played to their end, runs of key presses. They go straight onto the core lane,
never through the outbox, where they would wait behind JetStream utterance publishes
(``StreamStarted``/``StreamStopped`` are the lifecycle's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from dealerline_common import subjects, tracing
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.messages import BargeIn, KeyPresses, TurnPlayed

from .call import StreamCall
from .keypad import KeyRun
from .playback import BargeInResult, Turn

log = get_logger(__name__)

_REMEMBERED_PLAYED = 64

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class ControlLane:
    def __init__(self, bus: Bus, call: StreamCall, spawn: Spawn) -> None:
        """``spawn(name, coro)`` runs a publish as one of the stream's tasks."""
        self._bus = bus
        self._call = call
        self._spawn = spawn
        self._played: dict[str, None] = {}  # turns reported played, bounded

    def barge_in(self, results: list[BargeInResult]) -> None:
        """One ``BargeIn`` per turn the caller spoke over. The tasks are created now, so
        they write before the outbox gets to the utterance that caused the barge-in."""
        sid = self._call.session_id
        for r in results:
            log.info("barge-in", session_id=sid, turn_id=r.turn_id, heard_seqs=r.heard_seqs)
            message = BargeIn(
                session_id=sid,
                turn_id=r.turn_id,
                heard_text=r.heard_text,
                heard_seqs=r.heard_seqs,
            )
            self._spawn(
                "barge_in", self._publish(message, "barge-in not published", turn_id=r.turn_id)
            )

    def turn_played(self, turn_id: str, turn: Turn | None) -> None:
        """``TurnPlayed`` once a turn has been heard to its end (its last mark came back,
        or its closing message arrived after that); the escalation service waits for it
        before moving the caller. A barged-in turn is never reported played."""
        if turn is None or turn.cancelled or not turn.done or turn_id in self._played:
            return
        self._played[turn_id] = None
        while len(self._played) > _REMEMBERED_PLAYED:
            self._played.pop(next(iter(self._played)))
        message = TurnPlayed(session_id=self._call.session_id, turn_id=turn_id)
        self._spawn("turn_played", self._publish(message, "control message not published"))

    def keys(self, run: KeyRun) -> None:
        """``KeyPresses``: a run of keys the caller pressed (the keys are not logged)."""
        call = self._call
        log.info("key presses", session_id=call.session_id, run=run.run, keys=len(run.digits))
        message = KeyPresses(
            session_id=call.session_id,
            stream_sid=call.stream_sid,
            run=run.run,
            digits=run.digits,
            first_at=run.first_at,
            at=run.at,
        )
        self._spawn("keys", self._publish(message, "key presses not published", run=run.run))

    async def _publish(
        self, message: BargeIn | KeyPresses | TurnPlayed, failure: str, **fields: Any
    ) -> None:
        try:
            with tracing.attached(self._call.ctx):
                await self._bus.publish(subjects.control(message.session_id), message)
        except Exception:
            log.exception(failure, session_id=message.session_id, **fields)

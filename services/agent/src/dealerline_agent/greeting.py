"""The turns that greet a call. Each greeting is a durable job (``call.<sid>.agent_job``,
taken by one replica from the ``DL_AGENT_JOBS`` work queue, acked once the greeting is
said): if that replica dies, another takes the job and greets, and with no agent up the
job waits for one. Before the greeting the call is recorded on the state and, on a new
call, the caller recognised by caller ID.

- A new call: the gateway answered its incoming webhook and sent ``CallIncoming``; the
  greeting (``[CALL_STARTED]``) is written at once as turn ``turn_id_for_call(call_sid)``
  while Twilio opens the media stream, and the gateway holds its audio until then. That
  turn carries no ``stream_started``: the gateway stamps it when the stream opens, so the
  greeting is timed from the stream's start. The ``StreamStarted`` that follows says
  ``greeting_prefetched``: the stream is recorded and the call is not greeted again (the
  gateway holds the greeting only once the ``CallIncoming`` job is stored, so that job
  writes it even when no agent was up at the webhook).
- A new call's stream without that greeting (``greeting_prefetched=False``: the stream
  opened on another gateway replica, or after the hold expired; the gateway drops the
  webhook greeting's audio there): once the webhook's greeting is stored (waited for up
  to :data:`GREETING_WAIT_S` when the ``CallIncoming`` was heard here, on the control
  subject every replica hears), its text is said again under ``turn_id_for_stream``
  (speech only, no LLM); when there is none, the greeting is written now under that
  turn, as before the webhook greeting existed.
- A call back from a person: ``[ESCALATION_RETURNED:<reason>]`` or ``[CALL_RESUMED]``
  when its new stream starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from dealerline_common.conversation import (
    CALL_RESUMED,
    CALL_STARTED,
    escalation_returned,
    turn_id_for_call,
    turn_id_for_stream,
)
from dealerline_common.logs import get_logger
from dealerline_common.messages import CallIncoming, StreamStarted, TurnTimings
from dealerline_common.state_store import StateStore

from .dealership.repo import Dealership
from .history import from_dicts, turn_reply
from .identify import identify_caller
from .metrics import AgentMetrics
from .sentences import split_sentences
from .sessions import Session, Sessions
from .speaker import TurnVoice
from .tasks import Tasks
from .turns import TurnInput, TurnRunner
from .utterances import await_turn

log = get_logger(__name__)

# How long a stream that missed the webhook's greeting waits for it to be stored (the
# LLM writing it) before greeting anew; a constant until it earns a setting.
GREETING_WAIT_S = 10.0
_STORED_POLL_S = 0.1


def greeting_marker(started: StreamStarted) -> str:
    if not started.resumed:
        return CALL_STARTED
    if started.reason:
        return escalation_returned(started.reason)
    return CALL_RESUMED


class Greeter:
    def __init__(
        self,
        runner: TurnRunner,
        sessions: Sessions,
        store: StateStore,
        dealership: Dealership,
        tasks: Tasks,
        metrics: AgentMetrics,
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.store = store
        self.dealership = dealership
        self.tasks = tasks
        self.metrics = metrics
        self.greetings = metrics.base.counter(
            "agent_greetings_total",
            "Greetings by how they were given: written at the incoming webhook (incoming), "
            "its stream started with it held (prefetched), said again on a stream that "
            "missed it (said_again), written at the stream's start (at_stream, resumed)",
            ["how"],
        )

    # ------------------------------------------------------------------ a new call

    async def incoming(self, incoming: CallIncoming) -> None:
        """The call's ``CallIncoming`` job: write the greeting now, returning once it is
        said (the job is acked then). A second delivery (this replica or another took the
        job and died or failed) takes the same turn again: a stored reply is replayed,
        and its sentences keep their message ids, so the caller hears one greeting."""
        sid = incoming.session_id
        session = self.sessions.call_incoming(incoming)
        if session is None:
            log.info("incoming call already over", session_id=sid)
            return
        if session.greeting_claimed:
            self.metrics.control_ignored.labels("duplicate_incoming").inc()
            log.info("incoming call delivered again; its greeting is taken again", session_id=sid)
        else:
            session.greeting_claimed = True
            self.greetings.labels("incoming").inc()
        # No stream_started: the gateway stamps the stream's start on the audio.
        turn = TurnInput(turn_id=turn_id_for_call(incoming.call_sid), text=CALL_STARTED)
        await self._take(self._greet(incoming, turn), turn.turn_id)

    # ------------------------------------------------------------------ a stream

    async def stream_started(self, started: StreamStarted) -> None:
        """The stream's ``StreamStarted`` job: greet, unless the gateway holds the
        greeting written at the webhook; returns once the greeting is said."""
        sid = started.session_id
        session = self.sessions.stream_started(started)
        if session is None:
            # (counted by the control subscription, which every replica runs)
            log.info("start of a stream that already stopped", session_id=sid)
            return
        if started.resumed:
            self.greetings.labels("resumed").inc()
            turn = self._stream_turn(started)
            await self._take(self._greet(started, turn), turn.turn_id)
        elif not started.greeting_prefetched:
            await self._take(
                self._greet_again(started, session), f"greet-again:{started.stream_sid}"
            )
        else:
            # The gateway holds the webhook's greeting: the call's CallIncoming job writes
            # it (the gateway holds it only once that job is stored), here or on another
            # replica, now or once an agent is up.
            self.greetings.labels("prefetched").inc()
            log.info("greeting held by the gateway", session_id=sid)

    async def _take(self, turn: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a greeting as an owned task and wait for it (see :func:`await_turn`: one
        cut short by a barge-in or a hang-up is over; a drain cancels it with us)."""
        await await_turn(self.tasks.spawn(turn, name=f"turn:{name}", awaited=True))

    def _stream_turn(self, started: StreamStarted) -> TurnInput:
        return TurnInput(
            turn_id=turn_id_for_stream(started.stream_sid),
            text=greeting_marker(started),
            timings=TurnTimings(stream_started=started.at),
        )

    async def _greet(self, call: StreamStarted | CallIncoming, turn: TurnInput) -> None:
        try:
            await identify_caller(self.store, self.dealership, call)
        except Exception:
            # The greeting must not wait on a broken lookup: greet as an unknown caller.
            log.exception("caller identification failed", session_id=call.session_id)
        await self.runner.turn(call.session_id, turn)

    async def _greet_again(self, started: StreamStarted, session: Session) -> None:
        """A new call's stream without the webhook's greeting: say the stored one again,
        or greet now when there is none."""
        heard = session.incoming_call_sid == started.call_sid
        text = await self._stored_greeting(started, GREETING_WAIT_S if heard else 0.0)
        if text is None:
            self.greetings.labels("at_stream").inc()
            await self._greet(started, self._stream_turn(started))
            return
        if await self._say_again(started, text):
            self.greetings.labels("said_again").inc()

    async def _stored_greeting(self, started: StreamStarted, wait_s: float) -> str | None:
        """The text of the webhook's greeting once it is stored, waiting up to ``wait_s``
        for it; None when there is none (or the call ended meanwhile)."""
        sid = started.session_id
        turn_id = turn_id_for_call(started.call_sid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            state = await self.store.get_state(sid)
            text = turn_reply(from_dicts(state.messages), turn_id)
            if text:
                return text
            if loop.time() >= deadline or self.sessions.hung_up(sid):
                return None
            await asyncio.sleep(_STORED_POLL_S)

    async def _say_again(self, started: StreamStarted, text: str) -> bool:
        """Speak ``text`` as the stream's greeting turn (TTS only), in turn with the
        session's other turns; False when the call ended first."""
        sid = started.session_id
        turn_id = turn_id_for_stream(started.stream_sid)
        while True:
            session = self.sessions.open(sid)
            async with session.lock:
                if not self.sessions.is_current(session):
                    continue  # forgotten by the sweep meanwhile: start afresh
                if self.sessions.hung_up(sid):
                    return False
                voice = TurnVoice(
                    self.runner.p.bus,
                    self.metrics,
                    sid,
                    turn_id,
                    None,
                    TurnTimings(stream_started=started.at),
                    voice=(await self.runner.profile()).voice,
                )
                await voice.say_all(split_sentences(text))
                await voice.end()
                session.touch()
            log.info("greeting said again on a new stream", session_id=sid, turn_id=turn_id)
            return True

"""The turns that greet a call. Exactly one replica greets each (the ``agent`` queue group
hands it the control message); before the greeting the call is recorded on the state
and, on a new call, the caller recognised by caller ID.

- A new call: the gateway answered its incoming webhook and sent ``CallIncoming``; the
  greeting (``[CALL_STARTED]``) is written at once as turn ``turn_id_for_call(call_sid)``
  while Twilio opens the media stream, and the gateway holds its audio until then. That
  turn carries no ``stream_started``: the gateway stamps it when the stream opens, so the
  greeting is timed from the stream's start. The ``StreamStarted`` that follows says
  ``greeting_prefetched``: the stream is recorded and the call is not greeted again.
- A new call's stream without that greeting (``greeting_prefetched=False``: the stream
  opened on another gateway replica, or after the hold expired; the gateway drops the
  webhook greeting's audio there): once the webhook's greeting is stored (waited for up
  to :data:`GREETING_WAIT_S` when the ``CallIncoming`` was heard here), its text is said
  again under ``turn_id_for_stream`` (speech only, no LLM); when there is none, the
  greeting is written now under that turn, as before the webhook greeting existed.
- A call back from a person: ``[ESCALATION_RETURNED:<reason>]`` or ``[CALL_RESUMED]``
  when its new stream starts.
"""

from __future__ import annotations

import asyncio

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

    def on_call_incoming(self, incoming: CallIncoming) -> None:
        """This replica got the incoming call through the queue group: it greets now."""
        sid = incoming.session_id
        session = self.sessions.call_incoming(incoming)
        if session is None:
            log.info("incoming call already over", session_id=sid)
            return
        if session.greeting_claimed:
            self.metrics.control_ignored.labels("duplicate_incoming").inc()
            log.info("duplicate incoming call ignored", session_id=sid)
            return
        session.greeting_claimed = True
        self.greetings.labels("incoming").inc()
        # No stream_started: the gateway stamps the stream's start on the audio.
        turn = TurnInput(turn_id=turn_id_for_call(incoming.call_sid), text=CALL_STARTED)
        self.tasks.spawn(self._greet(incoming, turn), name=f"turn:{turn.turn_id}")

    # ------------------------------------------------------------------ a stream

    def on_stream_started(self, started: StreamStarted) -> None:
        """This replica got the start through the queue group: it greets, unless the
        gateway holds the greeting written at the webhook."""
        sid = started.session_id
        session = self.sessions.stream_started(started)
        if session is None:
            log.info("start of a stream that already stopped", session_id=sid)
            self.metrics.control_ignored.labels("stale_start").inc()
            return
        if started.resumed:
            self.greetings.labels("resumed").inc()
            self._spawn_greeting(started, self._stream_turn(started))
        elif not started.greeting_prefetched:
            name = f"greet-again:{started.stream_sid}"
            self.tasks.spawn(self._greet_again(started, session), name=name)
        elif session.incoming_call_sid == started.call_sid:
            self.greetings.labels("prefetched").inc()
            log.info("greeting held by the gateway", session_id=sid)
        else:
            # The gateway holds the webhook's greeting, but its CallIncoming never
            # reached this replica (e.g. no agent was up then): write it now under the
            # webhook's turn id; one already stored is replayed (and deduplicated).
            self.greetings.labels("incoming").inc()
            turn = TurnInput(turn_id=turn_id_for_call(started.call_sid), text=CALL_STARTED)
            self._spawn_greeting(started, turn)

    def _stream_turn(self, started: StreamStarted) -> TurnInput:
        return TurnInput(
            turn_id=turn_id_for_stream(started.stream_sid),
            text=greeting_marker(started),
            timings=TurnTimings(stream_started=started.at),
        )

    def _spawn_greeting(self, started: StreamStarted, turn: TurnInput) -> None:
        self.tasks.spawn(self._greet(started, turn), name=f"turn:{turn.turn_id}")

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
                )
                await voice.say_all(split_sentences(text))
                await voice.end()
                session.touch()
            log.info("greeting said again on a new stream", session_id=sid, turn_id=turn_id)
            return True

"""The turn runner: one turn of a session, whatever started it (caller speech, a started
stream, an escalation status, key presses).

Turns of one session run one at a time (the session's lock); sessions run concurrently.
A turn: joins background results into the state, replays itself if its reply is already
stored (a redelivered transcript), continues the reply an earlier delivery started if its
sentences were noted but the turn never committed (:mod:`.resume`), streams the graph's
reply out sentence by sentence (:mod:`.reply`), commits what it added to the state store, closes its speech with what it
asks the caller for (:mod:`.expects`), then announces it (:mod:`.announce`) and, if the
caller said goodbye, asks the gateway to hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common import tracing
from dealerline_common.bus import Bus
from dealerline_common.conversation import ai_message_id, is_turn_ai_id, user_message_id
from dealerline_common.logs import get_logger
from dealerline_common.messages import TurnTimings
from dealerline_common.speculation import Expects
from dealerline_common.state import ConversationState
from dealerline_common.state_store import StateStore

from .announce import Announcer
from .barge_in import BargeIns
from .commands import publish_notification, request_escalation, request_hangup
from .commit import commit_turn
from .dealership.context import ToolContext
from .dealership.effects import ToolEffect
from .dealership.limits import CustomerLimits
from .dealership.repo import Dealership
from .dealership.views import Profile
from .expects import expects_for
from .graph import Graph
from .history import from_dicts, text_of, turn_artifacts, turn_reply
from .metrics import AgentMetrics
from .reply import Reply
from .resume import continuation_note, keep_said
from .sentences import SentenceSplitter, split_sentences
from .sessions import Session, Sessions
from .settings import AgentSettings
from .speaker import TurnVoice
from .turn_record import TurnRecord, current_turn

log = get_logger(__name__)

# "resumed": a redelivered turn that continued the reply an earlier delivery started.
TurnResult = Literal["ok", "resumed", "cancelled", "replayed", "skipped"]


@dataclass
class TurnInput:
    """What a turn answers: caller speech (``caller_text``), or the agent's own input (a
    marker such as ``[CALL_STARTED]``, or nothing: the pending notifications speak)."""

    turn_id: str
    text: str
    utterance_id: str | None = None
    timings: TurnTimings = field(default_factory=TurnTimings)
    caller_text: bool = False


@dataclass
class TurnParts:
    """The runner's collaborators."""

    settings: AgentSettings
    bus: Bus
    store: StateStore
    graph: Graph
    sessions: Sessions
    barge_ins: BargeIns
    announcer: Announcer
    metrics: AgentMetrics
    dealership: Dealership
    clock: Callable[[], datetime]


class TurnRunner:
    def __init__(self, parts: TurnParts) -> None:
        self.p = parts

    async def turn(self, sid: str, turn: TurnInput) -> TurnResult:
        while True:
            session = self.p.sessions.open(sid)
            async with session.lock:
                if not self.p.sessions.is_current(session):
                    continue  # forgotten by the sweep while this turn waited: start afresh
                if self.p.sessions.hung_up(sid):
                    return "skipped"
                await self.p.barge_ins.apply_pending(session)
                return await self._tracked(session, turn)

    async def _tracked(self, session: Session, turn: TurnInput) -> TurnResult:
        """Run the turn as the session's running one, counted and timed."""
        session.running_turn_id = turn.turn_id
        session.running_task = asyncio.current_task()
        session.cut_short = False
        started = time.monotonic()
        result: TurnResult | Literal["error"] = "error"
        try:
            with tracing.span(
                "agent.turn",
                session_id=session.session_id,
                turn_id=turn.turn_id,
                utterance_id=turn.utterance_id,
            ):
                result = await self._run_locked(session, turn)
            return result
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            session.running_turn_id = None
            session.running_task = None
            session.generating = False
            session.touch()
            self.p.metrics.turns.labels(result).inc()
            self.p.metrics.turn_duration.observe(time.monotonic() - started)
            session.last_result = result

    async def _run_locked(self, session: Session, turn: TurnInput) -> TurnResult:
        sid = session.session_id
        # Background results (escalation outcomes) join the state first, exactly once.
        state = await self.p.store.sync_atomic_updates_to_state(sid)
        history = from_dicts(state.messages)
        profile = await self.profile()
        if any(isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn.turn_id) for m in history):
            return await self._replay(session, turn, history, state, profile)
        said = await self.p.store.noted_reply(sid, turn.turn_id)
        if said:
            log.info("turn resumed", session_id=sid, turn_id=turn.turn_id, said=len(said))
        elif not turn.text and not state.pending_notifications:
            # A proactive turn whose news an earlier turn already told: say nothing, but
            # end the turn so whoever waits for it to have played is not kept waiting;
            # the question the agent asked last still stands.
            standing = expects_for(previous_reply(history, turn.turn_id) or "")
            await self._voice(session, turn, profile).end(expects=standing)
            log.info("nothing new to say", session_id=sid, turn_id=turn.turn_id)
            return "skipped"
        if turn.caller_text:
            await self.p.announcer.caller_said(sid, turn.turn_id, turn.text)
        session.turns += 1
        session.last_turn_id = turn.turn_id
        session.generating = True
        record, reply = await self._generate(session, turn, state, history, said, profile)
        session.generating = False
        expects = expects_for(reply.voice.text, previous_reply(history, turn.turn_id))
        await self._finish(session, turn, record, reply, expects)
        return "resumed" if said else "ok"

    async def profile(self) -> Profile:
        """The dealership's profile for a turn, read afresh (a manager's change holds from
        the next turn); the settings' name and timezone while the database has no profile
        or cannot be read, so the caller is still answered."""
        s = self.p.settings
        try:
            profile = await self.p.dealership.profile()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("dealership profile unreadable, using the fallback", error=repr(exc))
            return Profile(name=s.dealership_name, timezone=s.dealership_timezone)
        try:
            self.p.announcer.zone = ZoneInfo(profile.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("dealership timezone unknown, using the fallback", zone=profile.timezone)
            return replace(profile, timezone=s.dealership_timezone)
        return profile

    def _voice(self, session: Session, turn: TurnInput, profile: Profile) -> TurnVoice:
        return TurnVoice(
            self.p.bus,
            self.p.metrics,
            session.session_id,
            turn.turn_id,
            turn.utterance_id,
            turn.timings,
            store=self.p.store,
            voice=profile.voice,
        )

    async def _replay(
        self,
        session: Session,
        turn: TurnInput,
        history: list[BaseMessage],
        state: ConversationState,
        profile: Profile,
    ) -> TurnResult:
        """A redelivered turn whose reply is already in the history: speak it again under
        the same message ids (the stream drops what it already has)."""
        voice = self._voice(session, turn, profile)
        reply = turn_reply(history, turn.turn_id)
        await voice.say_all(split_sentences(reply))
        await voice.end(expects=expects_for(voice.text, previous_reply(history, turn.turn_id)))
        # Its events too: the first delivery may have died between storing the turn
        # and publishing them (the same msg ids: the stream keeps one copy).
        effects = [ToolEffect.model_validate(a) for a in turn_artifacts(history, turn.turn_id)]
        await self.p.announcer.effects(session.session_id, turn.turn_id, effects, state)
        log.info("turn replayed", session_id=session.session_id, turn_id=turn.turn_id)
        return "replayed"

    async def _generate(
        self,
        session: Session,
        turn: TurnInput,
        state: ConversationState,
        history: list[BaseMessage],
        said: list[str],
        profile: Profile,
    ) -> tuple[TurnRecord, Reply]:
        """Stream the graph's reply out (after ``said``, the sentences an earlier delivery
        of the turn noted); a cut-short turn still keeps what it did."""
        sid = session.session_id
        record = TurnRecord(turn.turn_id)
        new_input: list[BaseMessage] = []
        if turn.text:
            new_input.append(HumanMessage(content=turn.text, id=user_message_id(turn.turn_id)))
            record.add(new_input)
        splitter = SentenceSplitter()
        voice = self._voice(session, turn, profile)
        reply = Reply(record, turn.timings, self.p.metrics, splitter, voice)
        # The continuation request is the turn's input, not part of what it adds.
        note = [continuation_note(turn.turn_id, said)] if said else []
        inputs = {
            "messages": [*history, *new_input, *note],
            "session_id": sid,
            "turn_id": turn.turn_id,
        }
        token = current_turn.set(record)
        try:
            await reply.resume(said)
            stream = self.p.graph.astream(
                inputs,
                self._config(sid, turn, state, profile),
                stream_mode=["messages", "updates"],
            )
            await reply.run(stream)
        except asyncio.CancelledError:
            if session.cut_short:
                await self._keep_cut_short(sid, record, reply)
            else:
                # Not the caller: the job goes to another replica, which resumes after
                # the noted sentences; storing a half reply here would end it there.
                log.info("turn abandoned to its next owner", session_id=sid, turn_id=turn.turn_id)
            raise
        finally:
            current_turn.reset(token)
        keep_said(record, reply.said)
        return record, reply

    def _config(
        self, sid: str, turn: TurnInput, state: ConversationState, profile: Profile
    ) -> RunnableConfig:
        rules = self.p.settings.identity_rules()
        ctx = ToolContext(
            session_id=sid,
            state=state.model_copy(deep=True),
            repo=self.p.dealership,
            clock=self.p.clock,
            timezone=profile.timezone,
            publish_escalation=partial(request_escalation, self.p.bus),
            turn_id=turn.turn_id,
            publish_notification=partial(publish_notification, self.p.bus),
            dealership_name=profile.name,
            assistant_name=profile.assistant_name,
            persona=profile.persona,
            identity_rules=rules,
            limits=CustomerLimits(self.p.store, rules, self.p.metrics),
        )
        return {
            "configurable": {"tool_context": ctx},
            "recursion_limit": 4 * self.p.settings.max_tool_rounds + 10,
        }

    async def _keep_cut_short(self, sid: str, record: TurnRecord, reply: Reply) -> None:
        """Barge-in or hang-up: keep what the turn did (tool calls committed, words
        generated so far); the heard text trims the reply once the barge-in lands."""
        partial_words = reply.unfinished_step()
        if partial_words:
            message_id = ai_message_id(record.turn_id, reply.steps_done)
            record.add([AIMessage(content=partial_words, id=message_id)])
        keep_said(record, reply.said)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._commit_and_announce(sid, record))

    async def _commit_and_announce(self, sid: str, record: TurnRecord) -> None:
        """A cut-short turn keeps what its tools did: stored, then announced."""
        stored = await commit_turn(self.p.store, self.p.metrics, sid, record)
        await self.p.announcer.effects(sid, record.turn_id, record.effects, stored)

    async def _finish(
        self,
        session: Session,
        turn: TurnInput,
        record: TurnRecord,
        reply: Reply,
        expects: Expects | None,
    ) -> None:
        """Store the turn, close its speech (saying what it asks for), then announce
        what it did."""
        sid = session.session_id
        turn.timings.llm_request = turn.timings.llm_request or record.llm_request
        stored = await commit_turn(self.p.store, self.p.metrics, sid, record)
        await reply.voice.end(expects=expects)
        await self.p.announcer.agent_said(sid, turn.turn_id, reply.text())
        await self.p.announcer.effects(sid, turn.turn_id, record.effects, stored)
        await self.p.announcer.state(session, stored)
        if any(e.end_call for e in record.effects):
            await request_hangup(self.p.bus, sid, turn.turn_id)
        log.info(
            "turn done",
            session_id=sid,
            turn_id=turn.turn_id,
            sentences=reply.voice.seq,
            tools=record.tool_calls,
            llm_failures=record.llm_failures,
            fallback=record.fallback,
            expects=expects,
        )


def previous_reply(history: list[BaseMessage], turn_id: str) -> str | None:
    """What the agent said last before ``turn_id`` (its last non-empty text reply)."""
    previous = None
    for m in history:
        if m.id == user_message_id(turn_id) or (
            isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn_id)
        ):
            break
        if isinstance(m, AIMessage) and text_of(m).strip():
            previous = text_of(m).strip()
    return previous

"""The agent service: takes transcripts and control messages off the bus, runs the graph
for each turn, and streams the reply out sentence by sentence on ``call.<sid>.say``.

- Transcripts come from a JetStream work consumer and are acked only after the turn's
  sentences are published; a turn id derived from the utterance id makes a redelivered
  turn publish under the same ``Nats-Msg-Id``s, so the ``say`` stream drops repeats.
- Control (stream started/stopped, barge-in) is a core subscription: its handler never
  waits on a turn, so a barge-in is never queued behind one. Every replica hears every
  control message (the one running a turn must see a barge-in or a stop); a second
  subscription in the queue group ``agent`` gets each ``StreamStarted`` on one replica
  only, and only that one runs the greeting turn.
- Turns of one session run one at a time (a per-session lock); sessions run concurrently.
- A stopped stream only makes the session idle: the call may come back on a new stream
  (after a human leg) and needs its history. A periodic sweep forgets sessions that had
  no turn and no activity for ``session_idle_ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError
from starlette.applications import Starlette

from dealerline_common import subjects, tracing
from dealerline_common.bus import Bus, Reject, WorkConsumer
from dealerline_common.conversation import escalation_turn_id
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    AppointmentEvent,
    BargeIn,
    CallbackRequestedEvent,
    EscalationRequest,
    EscalationStatus,
    HangupRequest,
    Say,
    StateUpdateEvent,
    StreamStarted,
    StreamStopped,
    Transcript,
    TranscriptEvent,
    TurnTimings,
    loads,
    now,
    parse_control,
)
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, HttpServer, ops_routes
from dealerline_common.state import ConversationState, HumanCallStatus
from dealerline_common.state_store import StateConflictError, StateStore, state_store_from_url

from .dealership.context import ToolContext
from .dealership.effects import ToolEffect, apply_effect
from .dealership.repo import Dealership
from .graph import (
    AGENT_NODE,
    UNSTREAMED,
    TurnRecord,
    build_graph,
    build_llm,
    current_turn,
)
from .history import (
    ai_message_id,
    append_new,
    apply_heard,
    complete_messages,
    from_dicts,
    is_turn_ai_id,
    text_of,
    turn_artifacts,
    turn_reply,
    user_message_id,
)
from .identify import identify_caller, open_dealership
from .metrics import AgentMetrics
from .prompts import CALL_RESUMED, CALL_STARTED, escalation_returned
from .sentences import SentenceSplitter, split_sentences
from .settings import AgentSettings

log = get_logger(__name__)

TurnResult = Literal["ok", "cancelled", "replayed", "skipped"]

# Escalation statuses the agent speaks on (the others change only the context block).
_SPOKEN_ESCALATION = {HumanCallStatus.CONFIRMED, HumanCallStatus.FAILED}

_MAX_STOPPED = 10_000  # hung-up sessions remembered, so late transcripts start nothing
_MAX_CLOSED_STREAMS = 8  # stopped stream ids remembered per session


def turn_id_for_utterance(utterance_id: str) -> str:
    """Deterministic: a redelivered transcript gets the turn id of its first delivery."""
    return f"turn-{utterance_id}"


def turn_id_for_stream(stream_sid: str) -> str:
    return f"turn-{stream_sid}"


def is_noise(transcript: Transcript, no_speech_max: float) -> bool:
    text = transcript.text.strip()
    if not any(ch.isalnum() for ch in text):
        return True
    return transcript.no_speech_prob is not None and transcript.no_speech_prob > no_speech_max


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
    streaming: bool = False  # a stream is up (False once it stopped)
    closed_streams: deque[str] = field(default_factory=lambda: deque(maxlen=_MAX_CLOSED_STREAMS))
    last_activity: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last_activity = time.monotonic()


class AgentService:
    """The agent, runnable in-process::

    agent = AgentService(load_settings(AgentSettings))
    await agent.start()   # connects, creates streams, consumes, serves /livez /readyz /metrics
    ...
    await agent.drain()   # stops taking turns, finishes those in flight, disconnects
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        bus: Bus | None = None,
        metrics: Metrics | None = None,
        llm: BaseChatModel | None = None,
        store: StateStore | None = None,
        dealership: Dealership | None = None,
        tools: list[BaseTool] | None = None,
        clock: Callable[[], datetime] | None = None,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = AgentMetrics(metrics)
        self.bus = bus or Bus(
            settings.nats_url,
            name="agent",
            metrics=self.metrics.base,
            file_storage=settings.js_file_storage,
        )
        self.clock = clock or (lambda: datetime.now(UTC))
        self.llm = llm or build_llm(settings)
        self.store = store or state_store_from_url(
            settings.state_url, namespace=settings.state_namespace, ttl_s=settings.state_ttl_s
        )
        self._owns_dealership = dealership is None
        self.dealership = dealership or open_dealership(settings, self.clock)
        if tools is None:
            from .dealership.tools import build_tools

            tools = build_tools()
        self.tools = tools
        self.graph, self.llm_caller = build_graph(
            self.llm, self.tools, settings, self.metrics, self.clock
        )
        self.health = Health()
        self.health.add_check("bus", lambda: self.bus.is_connected)
        self.http: HttpServer | None = None
        if serve_http:
            app = Starlette(routes=ops_routes(self.health, self.metrics.base))
            self.http = HttpServer(app, settings.http_host, settings.http_port)
        self.sessions: dict[str, Session] = {}
        self._stopped: OrderedDict[str, float] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control_sub: Subscription | None = None
        self._started_sub: Subscription | None = None
        self._escalation_sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._consumer: WorkConsumer | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.http is not None:
            await self.http.start()
        if not self.bus.is_connected:
            await self.bus.connect()
        await self.bus.ensure_streams()
        self._control_sub = await self.bus.subscribe(subjects.ALL_CONTROL, self._on_control)
        # NATS gives each control message to every plain subscriber and to one member of a
        # queue group: every replica sees barge-ins and stops, one replica greets.
        self._started_sub = await self.bus.subscribe(
            subjects.ALL_CONTROL, self._on_control_queued, queue=subjects.GROUP_AGENT
        )
        # Human-call status changes: one replica speaks on each (no polling).
        self._escalation_sub = await self.bus.subscribe(
            subjects.ALL_ESCALATION, self._on_escalation, queue=subjects.GROUP_AGENT
        )
        self._consumer = await self.bus.work(
            subjects.ALL_TRANSCRIPTS,
            stream=subjects.STREAM_TRANSCRIPTS,
            durable=subjects.GROUP_AGENT,
            handler=self._on_transcript,
            concurrency=self.settings.concurrency,
            ack_wait_s=self.settings.ack_wait_s,
            name="agent-transcripts",
        )
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="agent:session-sweep")
        self._started = True
        self.health.ready = True
        log.info(
            "agent started", model=self.settings.llm_model, base_url=self.settings.llm_base_url
        )

    async def drain(self) -> None:
        """Stop taking work, let turns in flight finish, then disconnect."""
        self.health.draining = True
        timeout = self.settings.drain_timeout_s
        for sub in (self._control_sub, self._started_sub, self._escalation_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._control_sub = self._started_sub = self._escalation_sub = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._started:
            with contextlib.suppress(Exception):
                await self.bus.stop_consuming(timeout)
        if self._consumer is not None:
            # Without this, nc.drain() waits out its whole timeout on the replies to
            # fetch requests the stopped loops abandoned.
            with contextlib.suppress(Exception):
                await self._consumer.psub.unsubscribe()
            self._consumer = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.settings.cancel_timeout_s)
        await self.bus.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        if self._owns_dealership:
            with contextlib.suppress(Exception):
                await self.dealership.close()
        if self.http is not None:
            await self.http.stop()
        self._started = False

    stop = drain

    async def __aenter__(self) -> AgentService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, awaited: bool = False
    ) -> asyncio.Task[Any]:
        """An owned, named task; one nobody awaits has its failure logged here."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not awaited:
            task.add_done_callback(_log_failure)
        return task

    def _session(self, session_id: str) -> Session:
        """The session, created if needed, marked active now."""
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = Session(session_id)
            self.metrics.active_sessions.set(len(self.sessions))
        session.touch()
        return session

    # ------------------------------------------------------------------ inputs

    async def _on_transcript(self, msg: Msg) -> None:
        try:
            transcript = loads(Transcript, msg.data)
            subjects.check_session_id(transcript.session_id)
        except (ValidationError, ValueError) as exc:
            raise Reject(f"bad transcript: {exc}") from exc
        sid = transcript.session_id
        if is_noise(transcript, self.settings.no_speech_max):
            self.metrics.transcripts_ignored.inc()
            log.info("transcript ignored as noise", session_id=sid)
            return
        if sid in self._stopped:
            log.info("transcript for a finished call", session_id=sid)
            return
        turn_id = turn_id_for_utterance(transcript.utterance_id)
        task = self._spawn(
            self._turn(
                sid,
                turn_id,
                transcript.text.strip(),
                utterance_id=transcript.utterance_id,
                timings=transcript.timings,
                caller_text=True,
            ),
            name=f"turn:{turn_id}",
            awaited=True,
        )
        await self._await_turn(task)

    async def _await_turn(self, task: asyncio.Task[TurnResult]) -> None:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                task.cancel()
                raise
            # The turn itself was cancelled (barge-in, hang-up): it is over, ack it.

    async def _on_control(self, msg: Msg) -> None:
        """Every replica: barge-ins, stops, and the bookkeeping of a started stream."""
        try:
            control = parse_control(msg.data)
        except ValidationError:
            log.warning("unreadable control message", subject=msg.subject)
            return
        if isinstance(control, StreamStarted):
            # The greeting is the queue group's; this replica only records the new stream,
            # so that it takes the session's transcripts again and knows which stop counts.
            self._note_stream_started(control)
        elif isinstance(control, BargeIn):
            self._on_barge_in(control)
        elif isinstance(control, StreamStopped):
            self._on_stream_stopped(control)
        elif isinstance(control, HangupRequest):
            pass  # for the gateway

    async def _on_control_queued(self, msg: Msg) -> None:
        """One replica of the queue group: runs the turn that greets a started stream."""
        try:
            control = parse_control(msg.data)
        except ValidationError:
            return  # the plain subscription logs it
        if isinstance(control, StreamStarted):
            await self._on_stream_started(control)

    def _note_stream_started(self, started: StreamStarted) -> Session | None:
        """Record ``started`` as the session's stream; None if that stream already stopped.

        Both subscriptions call this and may do so in either order, so it is idempotent,
        and a start handled after the stop of the same stream is recognised as stale.
        """
        sid = started.session_id
        session = self._session(sid)
        if started.stream_sid in session.closed_streams:
            return None
        if session.stream_sid != started.stream_sid:
            session.stream_sid = started.stream_sid
            session.streaming = True
            self._stopped.pop(sid, None)
        return session

    async def _on_stream_started(self, started: StreamStarted) -> None:
        sid = started.session_id
        if self._note_stream_started(started) is None:
            log.info("start of a stream that already stopped", session_id=sid)
            self.metrics.control_ignored.labels("stale_start").inc()
            return
        if not started.resumed:
            marker = CALL_STARTED
        elif started.reason:
            marker = escalation_returned(started.reason)
        else:
            marker = CALL_RESUMED
        turn_id = turn_id_for_stream(started.stream_sid)
        self._spawn(self._greet(started, turn_id, marker), name=f"turn:{turn_id}")

    async def _greet(self, started: StreamStarted, turn_id: str, marker: str) -> None:
        """Record the call on the session's state (and recognise the caller by caller ID
        on a new call) before the turn that greets them."""
        try:
            await identify_caller(self.store, self.dealership, started)
        except Exception:
            # The greeting must not wait on a broken lookup: greet as an unknown caller.
            log.exception("caller identification failed", session_id=started.session_id)
        await self._turn(
            started.session_id,
            turn_id,
            marker,
            utterance_id=None,
            timings=TurnTimings(stream_started=started.at),
            caller_text=False,
        )

    async def _on_escalation(self, msg: Msg) -> None:
        """A human-call status change: speak at once on acceptance and on final failure
        (the notification the escalation service pushed first carries the details)."""
        try:
            status = loads(EscalationStatus, msg.data)
        except ValidationError:
            log.warning("unreadable escalation status", subject=msg.subject)
            return
        sid = status.session_id
        task_id = status.task_id
        if status.status not in _SPOKEN_ESCALATION or task_id is None:
            return
        if status.status == HumanCallStatus.FAILED and not status.final:
            return  # one person of the hunt list failed; the next is being rung
        session = self.sessions.get(sid)
        if sid in self._stopped or (session is not None and not session.streaming):
            log.info("escalation status for a call not streaming", session_id=sid)
            return
        self.metrics.escalations.labels(status.status.value).inc()
        turn_id = escalation_turn_id(task_id, status.status.value)
        self._spawn(
            self._turn(
                sid,
                turn_id,
                "",
                utterance_id=None,
                timings=TurnTimings(),
                caller_text=False,
            ),
            name=f"turn:{turn_id}",
        )

    def _on_barge_in(self, barge: BargeIn) -> None:
        session = self.sessions.get(barge.session_id)
        if session is None:
            return
        session.touch()
        session.pending_heard[barge.turn_id] = barge.heard_text
        task = session.running_task
        if (
            session.running_turn_id == barge.turn_id
            and session.generating
            and task is not None
            and not task.done()
        ):
            task.cancel()
            self.metrics.turns_cancelled.labels("barge_in").inc()
            log.info(
                "turn cancelled by barge-in", session_id=barge.session_id, turn_id=barge.turn_id
            )
        self._spawn(self._apply_pending_locked(session), name=f"barge-in:{barge.turn_id}")

    def _on_stream_stopped(self, stopped: StreamStopped) -> None:
        """The stream ended (hang-up, or the call went to a human): stop talking, keep the
        history, and let the sweep forget the session if no stream comes back."""
        sid = stopped.session_id
        session = self.sessions.get(sid)
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
                return
        self._stopped[sid] = time.time()
        self._stopped.move_to_end(sid)
        while len(self._stopped) > _MAX_STOPPED:
            self._stopped.popitem(last=False)
        if session is None:
            return
        session.streaming = False
        session.touch()
        task = session.running_task
        if task is not None and not task.done():
            task.cancel()
            self.metrics.turns_cancelled.labels("hangup").inc()
        log.info("session idle", session_id=sid, reason=stopped.reason)

    # ------------------------------------------------------------------ idle sessions

    def _expired(self, session: Session, now: float) -> bool:
        return (
            session.running_task is None
            and now - session.last_activity >= self.settings.session_idle_ttl_s
        )

    async def _sweep_loop(self) -> None:
        interval = self.settings.session_sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep_idle_sessions()
            except Exception:
                log.exception("session sweep failed")

    async def sweep_idle_sessions(self, now: float | None = None) -> list[str]:
        """Forget every session idle for ``session_idle_ttl_s`` (monotonic ``now``):
        no turn running or waiting and no activity (stream start/stop, transcript, turn,
        barge-in) for that long. A session whose stop was lost still goes, on its last
        activity. Returns the ids forgotten."""
        now = time.monotonic() if now is None else now
        forgotten = []
        for session in list(self.sessions.values()):
            if session.lock.locked() or not self._expired(session, now):
                continue
            if await self._forget(session, now):
                forgotten.append(session.session_id)
        # Stops older than the TTL: their transcripts left the stream long ago.
        horizon = time.time() - self.settings.session_idle_ttl_s
        for sid, at in list(self._stopped.items()):
            if at < horizon and sid not in self.sessions:
                del self._stopped[sid]
        return forgotten

    async def _forget(self, session: Session, now: float) -> bool:
        sid = session.session_id
        async with session.lock:
            # A turn that arrived meanwhile touched the session and now waits on the lock.
            if self.sessions.get(sid) is not session or not self._expired(session, now):
                return False
            # The stored state stays (its TTL ends it): another replica or the escalation
            # service may still need it. Only this replica's bookkeeping goes.
            del self.sessions[sid]
            self.metrics.active_sessions.set(len(self.sessions))
        log.info("session forgotten", session_id=sid)
        return True

    # ------------------------------------------------------------------ turns

    async def run_turn(
        self,
        session_id: str,
        turn_id: str,
        text: str,
        *,
        utterance_id: str | None = None,
        timings: TurnTimings | None = None,
    ) -> TurnResult:
        """Run one turn directly (what the bus handlers do), e.g. from a test or a tool."""
        return await self._turn(
            session_id, turn_id, text, utterance_id=utterance_id, timings=timings, caller_text=True
        )

    async def _turn(
        self,
        sid: str,
        turn_id: str,
        text: str,
        *,
        utterance_id: str | None,
        timings: TurnTimings | None,
        caller_text: bool,
    ) -> TurnResult:
        while True:
            session = self._session(sid)
            async with session.lock:
                if self.sessions.get(sid) is not session:
                    continue  # forgotten by the sweep while this turn waited: start afresh
                if sid in self._stopped:
                    return "skipped"
                await self._apply_pending(session)
                session.running_turn_id = turn_id
                session.running_task = asyncio.current_task()
                started = time.monotonic()
                result: TurnResult | Literal["error"] = "error"
                try:
                    with tracing.span(
                        "agent.turn", session_id=sid, turn_id=turn_id, utterance_id=utterance_id
                    ):
                        result = await self._run_locked(
                            session,
                            turn_id,
                            text,
                            utterance_id,
                            timings or TurnTimings(),
                            caller_text,
                        )
                    return result
                except asyncio.CancelledError:
                    result = "cancelled"
                    raise
                finally:
                    session.running_turn_id = None
                    session.running_task = None
                    session.generating = False
                    session.touch()
                    self.metrics.turns.labels(result).inc()
                    self.metrics.turn_duration.observe(time.monotonic() - started)
                    session.last_result = result

    async def _run_locked(
        self,
        session: Session,
        turn_id: str,
        text: str,
        utterance_id: str | None,
        timings: TurnTimings,
        caller_text: bool,
    ) -> TurnResult:
        sid = session.session_id
        # Background results (escalation outcomes) join the state first, exactly once.
        state = await self.store.sync_atomic_updates_to_state(sid)
        history = from_dicts(state.messages)
        if any(isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn_id) for m in history):
            # A redelivered turn whose reply is already in the history: speak it again
            # under the same message ids (the stream drops what it already has).
            await self._publish_sentences(
                session,
                turn_id,
                utterance_id,
                split_sentences(turn_reply(history, turn_id), self.settings.clause_min_chars),
                timings,
            )
            # Its events too: the first delivery may have died between storing the turn
            # and publishing them (the same msg ids: the stream keeps one copy).
            effects = [ToolEffect.model_validate(a) for a in turn_artifacts(history, turn_id)]
            await self._publish_effects(sid, turn_id, effects, state)
            log.info("turn replayed", session_id=sid, turn_id=turn_id)
            return "replayed"
        if not text and not state.pending_notifications:
            # A proactive turn whose news an earlier turn already told: say nothing, but
            # end the turn so whoever waits for it to have played is not kept waiting.
            await self._say(session, turn_id, utterance_id, 0, "", timings, last=True)
            log.info("nothing new to say", session_id=sid, turn_id=turn_id)
            return "skipped"

        if caller_text:
            await self.bus.publish_durable(
                subjects.events(sid),
                TranscriptEvent(session_id=sid, role="user", text=text, turn_id=turn_id),
                msg_id=f"{turn_id}:event:user",
            )
        session.turns += 1
        session.last_turn_id = turn_id
        session.generating = True

        record = TurnRecord(turn_id)
        new_input: list[BaseMessage] = []
        if text:
            new_input.append(HumanMessage(content=text, id=user_message_id(turn_id)))
            record.add(new_input)
        ctx = ToolContext(
            session_id=sid,
            state=state.model_copy(deep=True),
            repo=self.dealership,
            clock=self.clock,
            timezone=self.settings.dealership_timezone,
            publish_escalation=self._publish_escalation,
            turn_id=turn_id,
        )
        config: RunnableConfig = {
            "configurable": {"tool_context": ctx},
            "recursion_limit": 4 * self.settings.max_tool_rounds + 10,
        }
        splitter = SentenceSplitter(clause_min_chars=self.settings.clause_min_chars)
        parts: list[str] = []
        step_parts: list[str] = []
        steps_done = 0
        seq = 0
        token = current_turn.set(record)
        try:
            inputs = {
                "messages": [*history, *new_input],
                "session_id": sid,
                "turn_id": turn_id,
            }
            async for mode, payload in self.graph.astream(
                inputs, config, stream_mode=["messages", "updates"]
            ):
                raise_if_cancelled()
                pieces: list[str] = []
                if mode == "messages":
                    chunk, meta = payload
                    node = meta.get("langgraph_node") if isinstance(meta, dict) else None
                    if node != AGENT_NODE or not isinstance(chunk, AIMessageChunk):
                        continue
                    piece = text_of(chunk)
                    if piece:
                        pieces.append(piece)
                elif mode == "updates" and isinstance(payload, dict):
                    done = payload.get(AGENT_NODE)
                    if isinstance(done, dict):
                        steps_done += 1
                        step_parts = []
                        message = done["messages"][-1]
                        if message.additional_kwargs.get(UNSTREAMED):
                            pieces.append(text_of(message))
                        if message.tool_calls:
                            for name in (tc["name"] for tc in message.tool_calls):
                                self.metrics.tool_calls.labels(name).inc()
                for piece in pieces:
                    if timings.first_token is None:
                        timings.first_token = now()
                        timings.llm_request = record.llm_request
                        if record.llm_request is not None:
                            self.metrics.llm_first_token.observe(
                                timings.first_token - record.llm_request
                            )
                    parts.append(piece)
                    step_parts.append(piece)
                    for sentence in splitter.push(piece):
                        await self._say(session, turn_id, utterance_id, seq, sentence, timings)
                        seq += 1
                if mode == "updates" and isinstance(payload, dict) and AGENT_NODE in payload:
                    # Words said before a tool call go out now, not after the tool runs.
                    for sentence in splitter.flush():
                        await self._say(session, turn_id, utterance_id, seq, sentence, timings)
                        seq += 1
            for sentence in splitter.flush():
                await self._say(session, turn_id, utterance_id, seq, sentence, timings)
                seq += 1
        except asyncio.CancelledError:
            # Barge-in or hang-up: keep what the turn did (tool calls committed, words
            # generated so far); the heard text trims the reply once the barge-in lands.
            partial = "".join(step_parts).strip()
            if partial:
                record.add([AIMessage(content=partial, id=ai_message_id(turn_id, steps_done))])
            with contextlib.suppress(Exception):
                await asyncio.shield(self._commit_and_announce(sid, record))
            raise
        finally:
            current_turn.reset(token)
        session.generating = False
        timings.llm_request = timings.llm_request or record.llm_request
        stored = await self._commit(sid, record)
        await self._say(session, turn_id, utterance_id, seq, "", timings, last=True)

        reply = "".join(parts).strip()
        await self.bus.publish_durable(
            subjects.events(sid),
            TranscriptEvent(session_id=sid, role="assistant", text=reply, turn_id=turn_id),
            msg_id=f"{turn_id}:event:assistant",
        )
        await self._publish_effects(sid, turn_id, record.effects, stored)
        await self._publish_state(session, stored)
        if any(e.end_call for e in record.effects):
            await self.bus.publish(
                subjects.control(sid),
                HangupRequest(session_id=sid, after_turn=turn_id, reason="end_call"),
            )
            log.info("hang-up after this turn", session_id=sid, turn_id=turn_id)
        log.info(
            "turn done",
            session_id=sid,
            turn_id=turn_id,
            sentences=seq,
            tools=record.tool_calls,
            llm_failures=record.llm_failures,
            fallback=record.fallback,
        )
        return "ok"

    async def _commit(self, sid: str, record: TurnRecord) -> ConversationState:
        """Write what the turn added onto the latest stored state (optimistic locking:
        a concurrent writer — the escalation service, another replica — loses nothing)."""
        messages = complete_messages(record.messages())
        consumed = set(record.consumed_notifications)

        def mutate(state: ConversationState) -> None:
            append_new(state.messages, messages)
            for effect in record.effects:
                apply_effect(state, effect)
            if consumed:
                state.pending_notifications = [
                    n for n in state.pending_notifications if n.id not in consumed
                ]

        try:
            return await self.store.update(sid, mutate)
        except StateConflictError:
            self.metrics.state_conflicts.inc()
            log.error("turn commit lost the state lock", session_id=sid, turn_id=record.turn_id)
            raise

    async def _commit_and_announce(self, sid: str, record: TurnRecord) -> None:
        """A cut-short turn keeps what its tools did: stored, then announced."""
        stored = await self._commit(sid, record)
        await self._publish_effects(sid, record.turn_id, record.effects, stored)

    async def _publish_effects(
        self,
        sid: str,
        turn_id: str,
        effects: list[ToolEffect],
        state: ConversationState,
    ) -> None:
        """Announce what the turn's tools changed (appointments, callback requests) on the
        session's events, after the turn's state is stored. Each event's ``Nats-Msg-Id``
        comes from the turn and the change, so a redelivered or replayed turn publishes
        nothing twice."""
        customer_name = state.customer.name if state.customer else None
        zone = ZoneInfo(self.settings.dealership_timezone)
        published: set[str] = set()
        for effect in effects:
            change = effect.appointment_change()
            if change is not None:
                msg_id = f"{turn_id}:event:appointment:{change.appointment_id}:{change.action}"
                if msg_id not in published:
                    published.add(msg_id)
                    appt = change.appointment
                    await self.bus.publish_durable(
                        subjects.events(sid),
                        AppointmentEvent(
                            session_id=sid,
                            action=change.action,
                            appointment_id=change.appointment_id,
                            service=appt.service if appt else None,
                            start=appt.start.astimezone(zone).isoformat() if appt else None,
                            vehicle=appt.vehicle if appt else None,
                            customer_name=customer_name,
                            turn_id=turn_id,
                        ),
                        msg_id=msg_id,
                    )
                    log.info(
                        "appointment event",
                        session_id=sid,
                        turn_id=turn_id,
                        action=change.action,
                        appointment_id=change.appointment_id,
                    )
            callback = effect.callback_requested
            if callback is not None:
                msg_id = f"{turn_id}:event:callback:{callback.callback_id}"
                if msg_id not in published:
                    published.add(msg_id)
                    await self.bus.publish_durable(
                        subjects.events(sid),
                        CallbackRequestedEvent(
                            session_id=sid,
                            callback_id=callback.callback_id,
                            preferred_window=callback.preferred_window,
                            reason=callback.reason,
                            customer_name=callback.customer_name or customer_name,
                            turn_id=turn_id,
                        ),
                        msg_id=msg_id,
                    )
                    log.info(
                        "callback event",
                        session_id=sid,
                        turn_id=turn_id,
                        callback_id=callback.callback_id,
                    )

    async def _publish_escalation(self, request: EscalationRequest) -> None:
        await self.bus.publish_durable(
            subjects.ESCALATION_REQUEST, request, msg_id=f"escalation:{request.task_id}"
        )
        log.info(
            "escalation requested",
            session_id=request.session_id,
            task_id=request.task_id,
            staff=len(request.staff),
        )

    async def _say(
        self,
        session: Session,
        turn_id: str,
        utterance_id: str | None,
        seq: int,
        text: str,
        timings: TurnTimings,
        *,
        last: bool = False,
    ) -> None:
        if seq == 0 and text:
            timings.first_sentence = now()
            if timings.llm_request is not None:
                self.metrics.first_sentence.observe(timings.first_sentence - timings.llm_request)
        say = Say(
            session_id=session.session_id,
            turn_id=turn_id,
            utterance_id=utterance_id,
            seq=seq,
            text=text,
            last=last,
            timings=timings.model_copy(),
        )
        await self.bus.publish_durable(
            subjects.say(session.session_id), say, msg_id=f"{turn_id}:{seq}"
        )
        raise_if_cancelled()

    async def _publish_sentences(
        self,
        session: Session,
        turn_id: str,
        utterance_id: str | None,
        sentences: list[str],
        timings: TurnTimings,
    ) -> None:
        for seq, sentence in enumerate(sentences):
            await self._say(session, turn_id, utterance_id, seq, sentence, timings)
        await self._say(session, turn_id, utterance_id, len(sentences), "", timings, last=True)

    async def _publish_state(
        self, session: Session, state: ConversationState | None = None
    ) -> None:
        if state is None:
            state = await self.store.get_state(session.session_id)
        await self.bus.publish_durable(
            subjects.events(session.session_id),
            StateUpdateEvent(
                session_id=session.session_id,
                state={
                    "turns": session.turns,
                    "last_turn_id": session.last_turn_id,
                    "last_result": session.last_result,
                    "interface": state.interface,
                    "version": state.version,
                    "customer": state.customer.model_dump(mode="json") if state.customer else None,
                    "booking_slots": state.booking_slots.filled(),
                    "confirmed_appointment": state.confirmed_appointment.model_dump(mode="json")
                    if state.confirmed_appointment
                    else None,
                    "escalation_in_progress": state.escalation_in_progress,
                    "human_call_status": state.escalation.status.value,
                    "pending_tasks": [t.model_dump(mode="json") for t in state.pending_tasks],
                },
            ),
        )

    # ------------------------------------------------------------------ barge-in

    async def _apply_pending_locked(self, session: Session) -> None:
        async with session.lock:
            await self._apply_pending(session)

    async def _apply_pending(self, session: Session) -> None:
        """Make the history say only what the caller heard of each interrupted turn."""
        while session.pending_heard:
            turn_id, heard = next(iter(session.pending_heard.items()))
            await self._apply_heard(session, turn_id, heard)
            session.pending_heard.pop(turn_id, None)

    async def _apply_heard(self, session: Session, turn_id: str, heard: str) -> None:
        sid = session.session_id
        found = False

        def mutate(state: ConversationState) -> None:
            nonlocal found
            found = apply_heard(state.messages, turn_id, heard)

        stored = await self.store.update(sid, mutate)
        if not found:
            log.info("barge-in for an unknown turn", session_id=sid, turn_id=turn_id)
            return
        await self.bus.publish_durable(
            subjects.events(sid),
            TranscriptEvent(
                session_id=sid,
                role="assistant",
                text=heard.strip(),
                turn_id=turn_id,
                interrupted=True,
            ),
            msg_id=f"{turn_id}:event:heard",
        )
        await self._publish_state(session, stored)
        log.info("history trimmed to what was heard", session_id=sid, turn_id=turn_id)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task failed", task=task.get_name(), error=repr(exc), exc_info=exc)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that an awaited call swallowed.

    nats-py awaits the JetStream ack with ``asyncio.wait_for``, which on Python 3.11
    drops a cancellation that lands as the ack arrives; the task still counts it in
    ``cancelling()``, so a barge-in is honoured at the next sentence at the latest.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

"""The agent service: takes transcripts, control messages and escalation statuses off the
bus, runs a turn of the graph for each (:mod:`.turns`), and streams the reply out
sentence by sentence on ``call.<sid>.say``.

- Transcripts come from a JetStream work consumer (:mod:`.utterances`) and are acked
  only after the turn's sentences are published.
- The greetings (an incoming call, before its stream opens, or a started stream:
  :mod:`.greeting`) and the escalation outcomes the agent speaks (a person accepted, or
  nobody could be reached: :mod:`.escalation_turns`) are durable jobs too (:mod:`.jobs`,
  the ``DL_AGENT_JOBS`` work queue), acked once the turn's sentences are published: a
  replica that dies leaves the job to another, and one asked for while no agent is up
  waits for one.
- Control (stream started/stopped, barge-in, key presses) is a core subscription: its
  handler never waits on a turn, so a barge-in is never queued behind one. Every replica
  hears every control message (the one running a turn must see a barge-in or a stop); a
  second subscription in the queue group ``agent`` gets each message on one replica
  only, which answers a run of key presses (:mod:`.keypad`).

The process lifecycle (HTTP endpoints, connect, drain on SIGTERM) is the fleet's shared
:class:`~dealerline_common.service.BusService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import WorkConsumer
from dealerline_common.logs import get_logger
from dealerline_common.messages import (
    BargeIn,
    CallIncoming,
    KeyPresses,
    StreamStarted,
    StreamStopped,
    TurnTimings,
    parse_control,
)
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health
from dealerline_common.service import BusService
from dealerline_common.state_store import StateStore, state_store_from_url

from .announce import Announcer
from .barge_in import BargeIns
from .dealership.repo import Dealership
from .escalation_turns import EscalationTurns
from .graph import build_graph
from .greeting import Greeter
from .identify import open_dealership
from .jobs import AgentJobs
from .keypad import Keypad
from .llm import build_llm
from .metrics import AgentMetrics
from .mortal import mortal
from .sessions import Sessions
from .settings import AgentSettings
from .tasks import Tasks
from .turns import TurnInput, TurnParts, TurnResult, TurnRunner
from .utterances import Utterances

log = get_logger(__name__)

# The agent's durable consumer of DL_AGENT_JOBS (greetings, spoken escalation outcomes).
AGENT_JOBS_DURABLE = "agent-jobs"


class AgentService(BusService):
    """The agent, runnable in-process::

    agent = AgentService(load_settings(AgentSettings))
    await agent.start()   # connects, creates streams, consumes, serves /livez /readyz /metrics
    ...
    await agent.drain()   # stops taking turns, finishes those in flight, disconnects
    """

    name = "agent"

    def __init__(
        self,
        settings: AgentSettings,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
        llm: BaseChatModel | None = None,
        store: StateStore | None = None,
        dealership: Dealership | None = None,
        tools: list[BaseTool] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.agent_settings = settings
        self.agent_metrics = AgentMetrics(self.metrics)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.llm = llm or build_llm(settings)
        self._own_store = store or state_store_from_url(
            settings.state_url,
            namespace=settings.state_namespace,
            ttl_s=settings.state_ttl_s,
            conflict_deadline_s=settings.state_conflict_deadline_s,
            unavailable_deadline_s=settings.state_unavailable_deadline_s,
        )
        # What this process writes goes through a view that kill() ends (see .mortal).
        self.store, self._store_dies = mortal(self._own_store)
        self._owns_dealership = dealership is None
        self.dealership = dealership or open_dealership(settings, self.clock)
        if tools is None:
            from .dealership.tools import build_tools

            tools = build_tools()
        self.tools = tools
        self.graph, self.llm_caller = build_graph(
            self.llm, self.tools, settings, self.agent_metrics, self.clock
        )
        self.tasks = Tasks()
        self.sessions = Sessions(settings.session_idle_ttl_s, self.agent_metrics)
        self._wire()
        self._control_sub: Subscription | None = None
        self._consumers: list[WorkConsumer] = []
        self._sweeper: asyncio.Task[None] | None = None

    def _wire(self) -> None:
        """The turn runner and the inputs that start turns."""
        s, m = self.agent_settings, self.agent_metrics
        announcer = Announcer(self.bus, s.dealership_timezone)
        self.barge_ins = BargeIns(self.sessions, self.store, announcer, m, self.tasks.spawn)
        self.runner = TurnRunner(
            TurnParts(
                settings=s,
                bus=self.bus,
                store=self.store,
                graph=self.graph,
                sessions=self.sessions,
                barge_ins=self.barge_ins,
                announcer=announcer,
                metrics=m,
                dealership=self.dealership,
                clock=self.clock,
            )
        )
        self.utterances = Utterances(self.runner, self.sessions, self.tasks, m, s.no_speech_max)
        self.greeter = Greeter(
            self.runner, self.sessions, self.store, self.dealership, self.tasks, m
        )
        self.escalation_turns = EscalationTurns(self.runner, self.sessions, self.tasks, m)
        self.jobs = AgentJobs(self.greeter, self.escalation_turns)
        self.keypad = Keypad(self.runner, self.sessions, self.tasks)

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        s = self.agent_settings
        self._control_sub = await self.bus.subscribe(subjects.ALL_CONTROL, self._on_control)
        # NATS gives each control message to every plain subscriber and to one member of a
        # queue group: every replica sees barge-ins and stops, one replica answers each run
        # of key presses.
        await self.bus.subscribe(
            subjects.ALL_CONTROL, self._on_control_queued, queue=subjects.GROUP_AGENT
        )
        transcripts = await self.bus.work(
            subjects.ALL_TRANSCRIPTS,
            stream=subjects.STREAM_TRANSCRIPTS,
            durable=subjects.GROUP_AGENT,
            handler=self.utterances.on_transcript,
            concurrency=s.concurrency,
            ack_wait_s=s.ack_wait_s,
            name="agent-transcripts",
        )
        # Greetings and spoken escalation outcomes: one replica takes each, and another
        # takes it over if that one dies before the turn's sentences are out.
        jobs = await self.bus.work(
            subjects.ALL_AGENT_JOBS,
            stream=subjects.STREAM_AGENT_JOBS,
            durable=AGENT_JOBS_DURABLE,
            handler=self.jobs.on_job,
            concurrency=s.concurrency,
            ack_wait_s=s.ack_wait_s,
            name=AGENT_JOBS_DURABLE,
        )
        self._consumers = [transcripts, jobs]
        self._sweeper = asyncio.create_task(
            self.sessions.sweep_loop(s.session_sweep_interval_s), name="agent:session-sweep"
        )
        log.info("agent started", model=s.llm_model, base_url=s.llm_base_url)

    async def on_drain(self) -> None:
        """Stop hearing the calls and taking turns, and let the turns in flight finish
        before the connection closes. The bus's consumers and queue groups are stopped
        here rather than after this hook, so that the turns they started (greetings,
        proactive and key-press turns) are waited for too."""
        timeout = self.agent_settings.drain_timeout_s
        if self._control_sub is not None:
            with contextlib.suppress(Exception):
                await self._control_sub.unsubscribe()
            self._control_sub = None
        await self._stop_background()
        with contextlib.suppress(Exception):
            await self.bus.stop_consuming(timeout)
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            # Without this, nc.drain() waits out its whole timeout on the replies to
            # fetch requests the stopped loops abandoned.
            with contextlib.suppress(Exception):
                await consumer.psub.unsubscribe()
        await self.tasks.finish(timeout, self.agent_settings.cancel_timeout_s)

    async def drain(self) -> None:
        await super().drain()
        await self._close_clients()

    async def kill(self) -> None:
        """Die like a crashed pod (tests). Its view of the state store dies first, so a
        turn cancelled below stores nothing (a SIGKILL runs no clean-up). The consumers
        stop next, so the jobs in flight are neither acked nor handed back (their turns
        are cancelled with their handlers): another replica takes them after
        ``ack_wait``. Cancelling the turns first would end their handlers normally, and
        ack jobs whose turns never finished."""
        self._store_dies()  # a dead process writes nothing more, not even a cut-short turn
        await self._stop_background()
        await super().kill()
        self.tasks.cancel()
        await self._close_clients()

    async def _stop_background(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _close_clients(self) -> None:
        with contextlib.suppress(Exception):
            await self._own_store.close()
        if self._owns_dealership:
            with contextlib.suppress(Exception):
                await self.dealership.close()

    stop = drain

    async def __aenter__(self) -> AgentService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()

    # ------------------------------------------------------------------ control

    async def _on_control(self, msg: Msg) -> None:
        """Every replica: barge-ins, stops, and the bookkeeping of a started stream."""
        try:
            control = parse_control(msg.data)
        except ValidationError:
            log.warning("unreadable control message", subject=msg.subject)
            return
        if isinstance(control, StreamStarted):
            # The greeting is a job (one replica's); this replica only records the stream,
            # so that it takes the session's transcripts again and knows which stop counts.
            # A start handled after its own stop is stale (counted here: a copy of the
            # start sent again never reaches the job queue, whose msg id drops it).
            if self.sessions.stream_started(control) is None:
                self.agent_metrics.control_ignored.labels("stale_start").inc()
        elif isinstance(control, CallIncoming):
            # Likewise: the greeting is being written (by the replica with the job), so
            # a stream that missed it waits for it rather than writing another.
            self.sessions.call_incoming(control)
        elif isinstance(control, BargeIn):
            self.barge_ins.on_barge_in(control)
        elif isinstance(control, StreamStopped):
            self.sessions.stream_stopped(control)

    async def _on_control_queued(self, msg: Msg) -> None:
        """One replica of the queue group: answers key presses (greetings are jobs)."""
        try:
            control = parse_control(msg.data)
        except ValidationError:
            return  # the plain subscription logs it
        if isinstance(control, KeyPresses):
            self.keypad.on_keys(control)

    # ------------------------------------------------------------------ direct use

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
        turn = TurnInput(turn_id, text, utterance_id, timings or TurnTimings(), caller_text=True)
        return await self.runner.turn(session_id, turn)

    async def sweep_idle_sessions(self, now: float | None = None) -> list[str]:
        """Forget every session idle for ``session_idle_ttl_s`` (monotonic ``now``)."""
        return await self.sessions.sweep(time.monotonic() if now is None else now)

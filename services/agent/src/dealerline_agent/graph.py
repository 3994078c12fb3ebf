"""The LangGraph agent (seed section 4)::

    preprocess -> agent -> [tool calls?] -> tools -> postprocess -> agent (loop)
                        -> [reply]      -> postprocess -> END

- preprocess: merges background notifications into the turn as markers
  (``[NOTIFICATION:human_available:John]``) and builds the system prompt with the context
  block (interface, today in the dealership's timezone, customer, booking progress,
  appointment, escalation).
- agent: one LLM call with every tool bound, streamed (each token reaches the service
  through LangGraph's ``messages`` stream). A slow or failing call is retried once; then a
  short apology is asked of the model on a fallback path (see :class:`LlmCaller`).
- tools: runs the tool calls. A tool that has started is allowed to finish even if the
  turn is cancelled (barge-in), so what it committed is recorded exactly once.
- postprocess: applies each tool result's effect (its artifact) to the turn's working
  copy of the conversation state, so later tools in the same turn see it; the service
  applies the same effects to the stored state when it commits the turn.

The graph keeps no history of its own: the service passes the stored history in and
commits what the turn added (``TurnRecord``) to the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from dealerline_common import tracing
from dealerline_common.logs import get_logger
from dealerline_common.messages import now
from dealerline_common.state import Notification

from .dealership.context import ToolContext
from .dealership.effects import ToolEffect, apply_effect
from .history import ai_message_id, trim_history, user_message_id
from .metrics import AgentMetrics
from .prompts import build_system_prompt, context_for, marker_instructions
from .settings import AgentSettings

log = get_logger(__name__)

AGENT_NODE = "agent"
PREPROCESS_NODE = "preprocess"
TOOLS_NODE = "tools"
POSTPROCESS_NODE = "postprocess"

# Marks an assistant message whose text was not streamed token by token (the last-resort
# apology): the service speaks it when the node finishes.
UNSTREAMED = "dl_unstreamed"


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    session_id: str
    turn_id: str
    system_prompt: str
    steps: int


@dataclass
class TurnRecord:
    """What one turn added, collected as the graph runs, committed by the service."""

    turn_id: str
    new_messages: dict[str, BaseMessage] = field(default_factory=dict)
    effects: list[ToolEffect] = field(default_factory=list)
    applied_tool_calls: set[str] = field(default_factory=set)
    consumed_notifications: list[str] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)  # tool names, in call order
    llm_request: float | None = None  # wall time of the first LLM request
    llm_failures: int = 0
    fallback: str | None = None  # "model" | "cached" | "last_resort" when used

    def add(self, messages: Sequence[BaseMessage]) -> None:
        for m in messages:
            if m.id is not None:
                self.new_messages[m.id] = m

    def messages(self) -> list[BaseMessage]:
        return list(self.new_messages.values())


current_turn: contextvars.ContextVar[TurnRecord | None] = contextvars.ContextVar(
    "dealerline_agent_turn", default=None
)


def build_llm(settings: AgentSettings, *, timeout_s: float | None = None) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.api_key(),
        temperature=settings.llm_temperature,
        timeout=timeout_s or settings.llm_timeout_s,
        # Retries are ours (LlmCaller): one, bounded by the first-token timeout.
        max_retries=0,
        streaming=True,
        use_responses_api=False,
    )


class LlmUnavailableError(RuntimeError):
    """The model did not answer in time, twice."""


class LlmCaller:
    """One LLM step with the seed's latency promise: the caller is never left in silence.

    The main call must produce its first token within ``llm_first_token_timeout_s``; a
    call that fails or is slow before its first token is retried once. After that a
    fallback asks the model for a one-sentence apology with a short timeout, so the words
    still come from the model when it answers at all. If even that fails, the apology the
    model wrote the last time the fallback worked is spoken (``cached``); only a service
    whose model has never answered says the configured last-resort sentence.
    """

    def __init__(self, llm: BaseChatModel, settings: AgentSettings, metrics: AgentMetrics):
        self.llm = llm
        self.settings = settings
        self.metrics = metrics
        self.cached_apology: str | None = None

    async def call(
        self, model: Any, messages: list[BaseMessage], record: TurnRecord | None
    ) -> AIMessage:
        attempts = 1 + self.settings.llm_retries
        for attempt in range(attempts):
            streamed = False
            try:
                return await self._stream(model, messages, self.settings.llm_first_token_timeout_s)
            except asyncio.CancelledError:
                raise
            except _Streamed as exc:
                # Words already reached the caller: a retry would say them twice.
                streamed = True
                cause: BaseException = exc.__cause__ or exc
            except Exception as exc:
                cause = exc
            if record is not None:
                record.llm_failures += 1
            kind = "timeout" if isinstance(cause, TimeoutError) else type(cause).__name__
            self.metrics.llm_failures.labels(kind).inc()
            log.warning(
                "llm call failed",
                attempt=attempt + 1,
                of=attempts,
                error=repr(cause),
                after_tokens=streamed,
            )
            if streamed:
                break
        return await self._fallback(record)

    async def _stream(self, model: Any, messages: list[BaseMessage], first_s: float) -> AIMessage:
        stream = model.astream(messages).__aiter__()
        try:
            first: AIMessageChunk = await asyncio.wait_for(anext(stream), first_s)
        except StopAsyncIteration:
            return AIMessage(content="")
        acc = first
        try:
            async with asyncio.timeout(self.settings.llm_timeout_s):
                async for chunk in stream:
                    acc = acc + chunk
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _Streamed from exc
        message = message_chunk_to_message(acc)
        assert isinstance(message, AIMessage)
        return message

    async def _fallback(self, record: TurnRecord | None) -> AIMessage:
        prompt = [
            SystemMessage(
                "You are the receptionist on a live phone call. A system problem delayed "
                "your answer. In one short spoken sentence, apologise and ask the caller to "
                "say that again. No markdown."
            ),
            HumanMessage("Apologise briefly."),
        ]
        try:
            message = await self._stream(self.llm, prompt, self.settings.llm_fallback_timeout_s)
            text = message.content if isinstance(message.content, str) else ""
            if text.strip():
                self.cached_apology = text.strip()
                if record is not None:
                    record.fallback = "model"
                self.metrics.llm_fallbacks.labels("model").inc()
                return AIMessage(content=text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("llm fallback failed", error=repr(exc))
        kind = "cached" if self.cached_apology else "last_resort"
        if record is not None:
            record.fallback = kind
        self.metrics.llm_fallbacks.labels(kind).inc()
        text = self.cached_apology or self.settings.last_resort_apology
        return AIMessage(content=text, additional_kwargs={UNSTREAMED: True})


class _Streamed(Exception):
    """The stream failed after tokens were emitted."""


def build_graph(
    llm: BaseChatModel,
    tools: Sequence[BaseTool],
    settings: AgentSettings,
    metrics: AgentMetrics,
    clock: Callable[[], datetime] | None = None,
) -> tuple[CompiledStateGraph[Any, Any, Any, Any], LlmCaller]:
    clock = clock or (lambda: datetime.now(UTC))
    caller = LlmCaller(llm, settings, metrics)
    with_tools = llm.bind_tools(list(tools)) if tools else llm
    tool_node = ToolNode(list(tools), handle_tool_errors=True) if tools else None

    def context_of(config: RunnableConfig) -> ToolContext:
        return config["configurable"]["tool_context"]  # type: ignore[no-any-return]

    async def preprocess(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        ctx = context_of(config)
        record = current_turn.get()
        turn_id = state["turn_id"]
        update: dict[str, Any] = {}
        pending: list[Notification] = list(ctx.state.pending_notifications)
        if pending:
            # Background results enter the conversation as markers, once each.
            text = " ".join(n.marker() for n in pending)
            note = HumanMessage(content=text, id=f"{turn_id}:notify")
            update["messages"] = [note]
            if record is not None:
                record.consumed_notifications.extend(n.id for n in pending)
                record.add([note])
        new_input = " ".join(
            str(m.content)
            for m in [*state["messages"], *update.get("messages", [])]
            if isinstance(m, HumanMessage)
            and m.id in (user_message_id(turn_id), f"{turn_id}:notify")
        )
        ctx_block = context_for(clock(), settings.dealership_timezone, ctx.state)
        update["system_prompt"] = build_system_prompt(
            settings.dealership_name, ctx_block
        ) + marker_instructions(new_input)
        update["steps"] = 0
        return update

    async def agent(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        record = current_turn.get()
        history = trim_history(list(state["messages"]), settings.max_history_messages)
        step = state.get("steps", 0)
        model = with_tools if step < settings.max_tool_rounds else llm
        if record is not None and record.llm_request is None:
            record.llm_request = now()
        with tracing.span("agent.llm", step=step, model=settings.llm_model):
            response = await caller.call(
                model, [SystemMessage(state["system_prompt"]), *history], record
            )
        # A stable id per turn and step: a barge-in edits it, a redelivered turn replaces it.
        response.id = ai_message_id(state["turn_id"], step)
        if record is not None:
            record.add([response])
            record.tool_calls.extend(tc["name"] for tc in response.tool_calls)
        return {"messages": [response], "steps": step + 1}

    async def run_tools(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        assert tool_node is not None
        record = current_turn.get()
        # A tool that started finishes even if the turn is cancelled meanwhile: what it
        # committed (a booking) is then recorded with the turn, exactly once.
        task = asyncio.ensure_future(tool_node.ainvoke(state, config))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                result = await task
                _record_tool_results(result, record, context_of(config))
            raise
        _record_tool_results(result, record, context_of(config))
        return result  # type: ignore[no-any-return]

    async def postprocess(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        # Tool effects were applied as each tools step finished (_record_tool_results);
        # here the turn only logs what it did.
        record = current_turn.get()
        if record is not None and record.tool_calls:
            log.info(
                "turn tools",
                session_id=state.get("session_id"),
                turn_id=state["turn_id"],
                tools=record.tool_calls,
            )
        return {}

    def after_agent(state: AgentState) -> str:
        last = state["messages"][-1]
        if tool_node is not None and isinstance(last, AIMessage) and last.tool_calls:
            return TOOLS_NODE
        return POSTPROCESS_NODE

    def after_postprocess(state: AgentState) -> str:
        last = state["messages"][-1]
        return AGENT_NODE if isinstance(last, ToolMessage) else END

    builder = StateGraph(AgentState)
    builder.add_node(PREPROCESS_NODE, preprocess)
    builder.add_node(AGENT_NODE, agent)
    builder.add_node(POSTPROCESS_NODE, postprocess)
    builder.add_edge(START, PREPROCESS_NODE)
    builder.add_edge(PREPROCESS_NODE, AGENT_NODE)
    if tool_node is not None:
        builder.add_node(TOOLS_NODE, run_tools)
        builder.add_edge(TOOLS_NODE, POSTPROCESS_NODE)
        builder.add_conditional_edges(AGENT_NODE, after_agent, [TOOLS_NODE, POSTPROCESS_NODE])
    else:
        builder.add_edge(AGENT_NODE, POSTPROCESS_NODE)
    builder.add_conditional_edges(POSTPROCESS_NODE, after_postprocess, [AGENT_NODE, END])
    return builder.compile(), caller


def _record_tool_results(result: Any, record: TurnRecord | None, ctx: ToolContext) -> None:
    """Apply each new tool result's effect to the turn's working state (postprocess)."""
    messages = result.get("messages", []) if isinstance(result, dict) else result
    for m in messages:
        if not isinstance(m, ToolMessage):
            continue
        if m.id is None:
            m.id = f"tool:{m.tool_call_id}"
        if record is not None:
            if m.tool_call_id in record.applied_tool_calls:
                continue
            record.applied_tool_calls.add(m.tool_call_id)
            record.add([m])
        if isinstance(m.artifact, dict):
            effect = ToolEffect.model_validate(m.artifact)
            apply_effect(ctx.state, effect)
            if record is not None:
                record.effects.append(effect)

"""The LangGraph agent::

    preprocess -> agent -> [tool calls?] -> tools -> postprocess -> agent (loop)
                        -> [reply]      -> postprocess -> END

- preprocess: merges background notifications into the turn as markers
  (``[NOTIFICATION:human_available:John]``) and builds the system prompt with the context
  block (interface, today in the dealership's timezone, customer, booking progress,
  appointment, escalation).
- agent: one LLM call with every tool bound, streamed (each token reaches the service
  through LangGraph's ``messages`` stream). A slow or failing call is retried once; then a
  short apology is asked of the model on a fallback path (see :class:`.llm.LlmCaller`).
- tools: runs the tool calls. A tool that has started is allowed to finish even if the
  turn is cancelled (barge-in), so what it committed is recorded exactly once.
- postprocess: applies each tool result's effect (its artifact) to the turn's working
  copy of the conversation state, so later tools in the same turn see it; the service
  applies the same effects to the stored state when it commits the turn.

The graph keeps no history of its own: the service passes the stored history in and
commits what the turn added (:class:`.turn_record.TurnRecord`) to the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from dealerline_common import tracing
from dealerline_common.conversation import ai_message_id, user_message_id
from dealerline_common.logs import get_logger
from dealerline_common.messages import now
from dealerline_common.state import Notification

from .dealership.context import ToolContext
from .dealership.effects import ToolEffect, apply_effect
from .history import trim_history
from .llm import LlmCaller
from .metrics import AgentMetrics
from .prompts import build_system_prompt, context_for, marker_instructions
from .settings import AgentSettings
from .turn_record import TurnRecord, current_turn

log = get_logger(__name__)

AGENT_NODE = "agent"
PREPROCESS_NODE = "preprocess"
TOOLS_NODE = "tools"
POSTPROCESS_NODE = "postprocess"

Graph = CompiledStateGraph[Any, Any, Any, Any]


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    session_id: str
    turn_id: str
    system_prompt: str
    steps: int


def notify_message_id(turn_id: str) -> str:
    """The id of the message that carries a turn's background notifications as markers."""
    return f"{turn_id}:notify"


def context_of(config: RunnableConfig) -> ToolContext:
    return config["configurable"]["tool_context"]  # type: ignore[no-any-return]


class Nodes:
    """The graph's nodes and routing, over one LLM and one set of tools."""

    def __init__(
        self,
        llm: BaseChatModel,
        tools: Sequence[BaseTool],
        settings: AgentSettings,
        caller: LlmCaller,
        clock: Callable[[], datetime],
    ) -> None:
        self.llm = llm
        self.with_tools = llm.bind_tools(list(tools)) if tools else llm
        self.tool_node = ToolNode(list(tools), handle_tool_errors=True) if tools else None
        self.settings = settings
        self.caller = caller
        self.clock = clock

    async def preprocess(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        ctx = context_of(config)
        turn_id = state["turn_id"]
        update: dict[str, Any] = {}
        pending: list[Notification] = list(ctx.state.pending_notifications)
        if pending:
            # Background results enter the conversation as markers, once each.
            text = " ".join(n.marker() for n in pending)
            note = HumanMessage(content=text, id=notify_message_id(turn_id))
            update["messages"] = [note]
            record = current_turn.get()
            if record is not None:
                record.consumed_notifications.extend(n.id for n in pending)
                record.add([note])
        new_input = " ".join(
            str(m.content)
            for m in [*state["messages"], *update.get("messages", [])]
            if isinstance(m, HumanMessage)
            and m.id in (user_message_id(turn_id), notify_message_id(turn_id))
        )
        # The dealership's name, timezone, assistant and persona: the profile this turn read.
        ctx_block = context_for(self.clock(), ctx.timezone, ctx.state)
        update["system_prompt"] = build_system_prompt(
            ctx.dealership_name, ctx_block, assistant=ctx.assistant_name, persona=ctx.persona
        ) + marker_instructions(new_input)
        update["steps"] = 0
        return update

    async def agent(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        record = current_turn.get()
        history = trim_history(list(state["messages"]), self.settings.max_history_messages)
        step = state.get("steps", 0)
        model = self.with_tools if step < self.settings.max_tool_rounds else self.llm
        if record is not None and record.llm_request is None:
            record.llm_request = now()
        with tracing.span("agent.llm", step=step, model=self.settings.llm_model):
            response = await self.caller.call(
                model, [SystemMessage(state["system_prompt"]), *history], record
            )
        # A stable id per turn and step: a barge-in edits it, a redelivered turn replaces it.
        response.id = ai_message_id(state["turn_id"], step)
        if record is not None:
            record.add([response])
            record.tool_calls.extend(tc["name"] for tc in response.tool_calls)
        return {"messages": [response], "steps": step + 1}

    async def run_tools(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        assert self.tool_node is not None
        record = current_turn.get()
        # A tool that started finishes even if the turn is cancelled meanwhile: what it
        # committed (a booking) is then recorded with the turn, exactly once.
        task = asyncio.ensure_future(self.tool_node.ainvoke(state, config))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                result = await task
                record_tool_results(result, record, context_of(config))
            raise
        record_tool_results(result, record, context_of(config))
        return result  # type: ignore[no-any-return]

    async def postprocess(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        # Tool effects were applied as each tools step finished (record_tool_results);
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

    def after_agent(self, state: AgentState) -> str:
        last = state["messages"][-1]
        if self.tool_node is not None and isinstance(last, AIMessage) and last.tool_calls:
            return TOOLS_NODE
        return POSTPROCESS_NODE

    @staticmethod
    def after_postprocess(state: AgentState) -> str:
        last = state["messages"][-1]
        return AGENT_NODE if isinstance(last, ToolMessage) else END


def build_graph(
    llm: BaseChatModel,
    tools: Sequence[BaseTool],
    settings: AgentSettings,
    metrics: AgentMetrics,
    clock: Callable[[], datetime] | None = None,
) -> tuple[Graph, LlmCaller]:
    caller = LlmCaller(llm, settings, metrics)
    nodes = Nodes(llm, tools, settings, caller, clock or (lambda: datetime.now(UTC)))
    builder = StateGraph(AgentState)
    builder.add_node(PREPROCESS_NODE, nodes.preprocess)
    builder.add_node(AGENT_NODE, nodes.agent)
    builder.add_node(POSTPROCESS_NODE, nodes.postprocess)
    builder.add_edge(START, PREPROCESS_NODE)
    builder.add_edge(PREPROCESS_NODE, AGENT_NODE)
    if nodes.tool_node is not None:
        builder.add_node(TOOLS_NODE, nodes.run_tools)
        builder.add_edge(TOOLS_NODE, POSTPROCESS_NODE)
        builder.add_conditional_edges(AGENT_NODE, nodes.after_agent, [TOOLS_NODE, POSTPROCESS_NODE])
    else:
        builder.add_edge(AGENT_NODE, POSTPROCESS_NODE)
    builder.add_conditional_edges(POSTPROCESS_NODE, nodes.after_postprocess, [AGENT_NODE, END])
    return builder.compile(), caller


def record_tool_results(result: Any, record: TurnRecord | None, ctx: ToolContext) -> None:
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

"""The LangGraph agent: preprocess → agent → END.

The full agent (tools, postprocess, the Redis state store) grows from here; this graph
already keeps a conversation per session in a checkpointer (thread id = session id).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from dealerline_common.messages import now

from .prompts import build_system_prompt, context_for
from .settings import AgentSettings

AGENT_NODE = "agent"
PREPROCESS_NODE = "preprocess"


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    session_id: str
    turn_id: str
    system_prompt: str


@dataclass
class LlmTrace:
    """Filled by the agent node for the turn that runs it (read by the service)."""

    llm_request: float | None = None


current_trace: contextvars.ContextVar[LlmTrace | None] = contextvars.ContextVar(
    "dealerline_agent_llm_trace", default=None
)


def ai_message_id(turn_id: str) -> str:
    """The id of the assistant message a turn adds to the history."""
    return f"{turn_id}:ai"


def user_message_id(turn_id: str) -> str:
    return f"{turn_id}:user"


def build_llm(settings: AgentSettings) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.api_key(),
        temperature=settings.llm_temperature,
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        streaming=True,
        use_responses_api=False,
    )


def trim_history(messages: list[BaseMessage], limit: int) -> list[BaseMessage]:
    """The last ``limit`` messages, starting at a caller message so no tool result or
    assistant reply is cut from what it answers."""
    if len(messages) <= limit:
        return messages
    kept = messages[-limit:]
    for i, message in enumerate(kept):
        if isinstance(message, HumanMessage):
            return kept[i:]
    return kept


def build_graph(
    llm: BaseChatModel,
    settings: AgentSettings,
    checkpointer: BaseCheckpointSaver[Any],
    clock: Callable[[], datetime] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    clock = clock or (lambda: datetime.now(UTC))

    async def preprocess(state: AgentState) -> dict[str, Any]:
        ctx = context_for(clock(), settings.dealership_timezone)
        return {"system_prompt": build_system_prompt(settings.dealership_name, ctx)}

    async def agent(state: AgentState) -> dict[str, Any]:
        history = trim_history(list(state["messages"]), settings.max_history_messages)
        trace = current_trace.get()
        if trace is not None:
            trace.llm_request = now()
        response = await llm.ainvoke([SystemMessage(state["system_prompt"]), *history])
        # A stable id per turn: a barge-in edits it, a redelivered turn replaces it.
        response.id = ai_message_id(state["turn_id"])
        return {"messages": [response]}

    builder = StateGraph(AgentState)
    builder.add_node(PREPROCESS_NODE, preprocess)
    builder.add_node(AGENT_NODE, agent)
    builder.add_edge(START, PREPROCESS_NODE)
    builder.add_edge(PREPROCESS_NODE, AGENT_NODE)
    builder.add_edge(AGENT_NODE, END)
    return builder.compile(checkpointer=checkpointer)

"""What one turn added (messages, tool effects, consumed notifications, timings),
collected as the graph runs and committed by the turn runner."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage

from .dealership.effects import ToolEffect


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

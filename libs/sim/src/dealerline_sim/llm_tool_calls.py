"""Tool calls as the scripted LLM sends them: a rule's scripted calls with their ids and
templated arguments, the ``tool_calls`` of a whole assistant message, and the deltas of a
streamed one (the call's id and name first, then its arguments in small fragments)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dealerline_sim.llm_scenario import ScriptedToolCall
from dealerline_sim.llm_templates import render


@dataclass(frozen=True)
class RenderedCall:
    id: str
    name: str
    arguments: str  # JSON, templates filled


def render_tool_calls(
    calls: list[ScriptedToolCall],
    completion_index: int,
    messages: list[dict[str, Any]],
    found: re.Match[str] | None,
) -> list[RenderedCall]:
    """``calls`` for the ``completion_index``-th completion (ids ``call_<n>_<i>`` unless
    the scenario gave one)."""
    return [
        RenderedCall(
            tc.id or f"call_{completion_index}_{i}",
            tc.name,
            render(tc.arguments_json(), messages, found),
        )
        for i, tc in enumerate(calls)
    ]


def message_tool_calls(calls: list[RenderedCall]) -> list[dict[str, Any]]:
    """The ``tool_calls`` of a non-streamed assistant message."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def tool_call_deltas(index: int, call: RenderedCall) -> list[dict[str, Any]]:
    """The stream deltas of one call: its id and name, then its arguments in pieces."""
    head = {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }
    return [{"tool_calls": [head]}] + [
        {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
        for fragment in _fragments(call.arguments)
    ]


def _fragments(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]

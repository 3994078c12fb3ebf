"""The message history as the state store keeps it (LangChain's plain-dict form), and the
edits a turn makes to it: append what the turn said and did, trim an interrupted reply
to what the caller heard."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    messages_from_dict,
    messages_to_dict,
)

from dealerline_common.conversation import ai_message_id, is_turn_ai_id, user_message_id


def to_dicts(messages: Iterable[BaseMessage]) -> list[dict[str, Any]]:
    return messages_to_dict(list(messages))


def from_dicts(data: Sequence[dict[str, Any]]) -> list[BaseMessage]:
    return messages_from_dict(list(data))


def message_id(data: dict[str, Any]) -> str | None:
    inner = data.get("data")
    return inner.get("id") if isinstance(inner, dict) else None


def text_of(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(
        str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in message.content
    )


def turn_reply(messages: Sequence[BaseMessage], turn_id: str) -> str:
    """Everything the assistant said in ``turn_id`` (all its steps), in order."""
    return " ".join(
        t
        for m in messages
        if isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn_id)
        for t in [text_of(m).strip()]
        if t
    )


def turn_artifacts(messages: Sequence[BaseMessage], turn_id: str) -> list[Any]:
    """The artifacts (tool effects as JSON) of the tool calls ``turn_id`` made, in call
    order: what a replayed turn re-announces."""
    call_ids = [
        tc.get("id")
        for m in messages
        if isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn_id)
        for tc in m.tool_calls
    ]
    results = {m.tool_call_id: m.artifact for m in messages if isinstance(m, ToolMessage)}
    return [results[c] for c in call_ids if c in results and results[c] is not None]


def complete_messages(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` without an assistant tool call whose results are missing (a turn cut
    short mid-tool); an LLM API refuses a history with a dangling tool call."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    kept: list[BaseMessage] = []
    for m in messages:
        if isinstance(m, AIMessage) and not all(tc.get("id") in answered for tc in m.tool_calls):
            continue
        kept.append(m)
    called = {tc.get("id") for m in kept if isinstance(m, AIMessage) for tc in (m.tool_calls or [])}
    return [m for m in kept if not isinstance(m, ToolMessage) or m.tool_call_id in called]


def append_new(history: list[dict[str, Any]], new: Sequence[BaseMessage]) -> int:
    """Append the messages of ``new`` whose id is not in ``history`` yet (a retried commit
    adds nothing twice). Returns how many were added."""
    have = {message_id(m) for m in history}
    added = 0
    for m in to_dicts(new):
        mid = message_id(m)
        if mid is not None and mid in have:
            continue
        history.append(m)
        have.add(mid)
        added += 1
    return added


def apply_heard(history: list[dict[str, Any]], turn_id: str, heard: str) -> bool:
    """Make ``turn_id``'s assistant messages say only ``heard`` (what the caller heard
    before barging in). Tool calls the turn made stay (what they did is done); their
    messages lose their text, the last assistant message carries the heard text, and an
    empty text-only reply is dropped. Returns whether the turn was found."""
    messages = from_dicts(history)
    indices = [
        i
        for i, m in enumerate(messages)
        if isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn_id)
    ]
    user_index = next((i for i, m in enumerate(messages) if m.id == user_message_id(turn_id)), None)
    if not indices and user_index is None:
        return False
    heard = heard.strip()
    if not indices:
        if heard and user_index is not None:
            messages.insert(user_index + 1, AIMessage(content=heard, id=ai_message_id(turn_id)))
        history[:] = to_dicts(messages)
        return True
    for i in indices:
        messages[i] = messages[i].model_copy(update={"content": ""})
    # The heard words go to the turn's final text reply; if the turn was cut before one
    # (mid-tool), to its first step, which is where words before a tool call live.
    text_only = [i for i in indices if not getattr(messages[i], "tool_calls", None)]
    target = text_only[-1] if text_only else indices[0]
    if heard:
        messages[target] = messages[target].model_copy(update={"content": heard})
    elif target in text_only:
        del messages[target]
    history[:] = to_dicts(messages)
    return True


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

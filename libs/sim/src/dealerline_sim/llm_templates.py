"""The templates of the scripted LLM's replies and tool-call arguments: ``{g1}``… (groups
of the rule's match), ``{today}`` and ``{date:+N}`` (from the system prompt's
``TODAY: YYYY-MM-DD`` line, else the real date), ``{next:tuesday}`` (the next such weekday
after today), ``{last_tool:key}`` (``key=value`` or ``"key": value`` in the latest tool
result) and ``{sys:some words}`` (the token after ``some words`` in the system prompt)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from dealerline_sim.llm_scenario import content_text

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_TEMPLATE = re.compile(
    r"\{(g\d|today|date:[+-]?\d+|next:[a-z]+|last_tool:[A-Za-z_]+|sys:[A-Za-z_ ]+)\}"
)


def render(text: str, messages: list[dict[str, Any]], found: re.Match[str] | None) -> str:
    """Fill the templates of a reply or of tool-call arguments."""
    if "{" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        return _fill(m.group(1), messages, found)

    return _TEMPLATE.sub(one, text)


def _fill(name: str, messages: list[dict[str, Any]], found: re.Match[str] | None) -> str:
    if name.startswith("sys:"):
        return _from_system(messages, name[4:])
    if name.startswith("g"):
        index = int(name[1:])
        return (found.group(index) or "") if found and index <= (found.re.groups) else ""
    if name == "today":
        return _today(messages).isoformat()
    if name.startswith("date:"):
        return (_today(messages) + timedelta(days=int(name[5:]))).isoformat()
    if name.startswith("next:"):
        wanted = _WEEKDAYS.index(name[5:])
        base = _today(messages)
        ahead = (wanted - base.weekday()) % 7 or 7
        return (base + timedelta(days=ahead)).isoformat()
    return _last_tool(messages, name.split(":", 1)[1])


def _system(messages: list[dict[str, Any]]) -> str:
    return "\n".join(content_text(m.get("content")) for m in messages if m.get("role") == "system")


def _today(messages: list[dict[str, Any]]) -> date:
    seen = re.search(r"TODAY:\s*(\d{4}-\d{2}-\d{2})", _system(messages))
    return date.fromisoformat(seen.group(1)) if seen else date.today()


def _last_tool(messages: list[dict[str, Any]], key: str) -> str:
    for m in reversed(messages):
        if m.get("role") != "tool":
            continue
        body = content_text(m.get("content"))
        hit = re.search(rf'"?{re.escape(key)}"?\s*[=:]\s*"?([^",}}|\s]+)', body)
        if hit:
            return hit.group(1)
    return ""


def _from_system(messages: list[dict[str, Any]], words: str) -> str:
    hit = re.search(rf"{re.escape(words)}\s*[=:]?\s*([^\s,;)]+)", _system(messages))
    return hit.group(1) if hit else ""

"""The agent's tools: what the LLM can look up and do at the dealership.

Every tool
- takes a pydantic argument schema (what the LLM sees; :mod:`.args`) plus the turn's
  :class:`~..context.ToolContext`, which :mod:`.registry` takes from the RunnableConfig;
- returns ``(content, effect)``: ``content`` is short plain text with facts only (the
  LLM writes every word the caller hears); failures start with ``ERROR:`` and say what to
  ask the caller; ``effect`` is a :class:`~..effects.ToolEffect`, which the graph applies
  to the conversation state (tools only read ``ctx.state``).

The families: :mod:`.customers` (the caller's record and vehicles), :mod:`.booking` (the
booking in progress, free times, booking), :mod:`.appointments` (list, move, cancel),
:mod:`.information` (FAQ, services, hours), :mod:`.handoff` (a person, a callback, the
end of the call); :mod:`.replies` holds what they share.
"""

from .registry import build_tools, tool_names

__all__ = ["build_tools", "tool_names"]

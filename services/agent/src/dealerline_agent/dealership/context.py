"""What a tool call may use: the turn's state, the repository, the clock, the bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dealerline_common.db.models import DEFAULT_ASSISTANT_NAME
from dealerline_common.messages import EscalationRequest, NotificationJob
from dealerline_common.state import ConversationState

from .identity import IdentityRules
from .limits import CustomerLimits
from .repo import Dealership

__all__ = ["TOOL_CONTEXT_KEY", "ToolContext", "tool_context"]

TOOL_CONTEXT_KEY = "tool_context"


@dataclass
class ToolContext:
    """Handed to every tool through ``config["configurable"]["tool_context"]``.

    ``state`` is the turn's working copy: tools READ it (customer, booking slots, call sid)
    and never write it; what a tool changes travels back as its ``ToolEffect`` artifact,
    which the graph applies after the tools step, so a later tool call in the same turn
    sees it.
    """

    session_id: str
    state: ConversationState
    repo: Dealership
    clock: Callable[[], datetime]  # aware UTC now
    timezone: str  # the dealership's IANA timezone
    publish_escalation: Callable[[EscalationRequest], Awaitable[None]]
    # The turn the tools run in: the same for a redelivered turn, so what a tool writes
    # once per turn (a callback request) is keyed on it. None outside a turn (tests).
    turn_id: str | None = None
    # Texts and emails to the customer (``notify.sms`` / ``notify.email``): a one-time
    # code, a notice that contact details changed. None: not wired (tools say so).
    publish_notification: Callable[[NotificationJob], Awaitable[None]] | None = None
    dealership_name: str = "the dealership"
    # Who answers (the profile's assistant) and how (its persona), for the prompt.
    assistant_name: str = DEFAULT_ASSISTANT_NAME
    persona: str | None = None
    identity_rules: IdentityRules = field(default_factory=IdentityRules)
    # Wrong facts and texted codes per customer across calls and replicas (the state
    # store's counters). None: not wired (unit tests of one call); the service always is.
    limits: CustomerLimits | None = None


def tool_context(config: Any) -> ToolContext:
    """The :class:`ToolContext` inside a RunnableConfig, or a RuntimeError that says the
    graph forgot to pass one (a wiring bug, never the caller's fault)."""
    configurable = (config or {}).get("configurable") or {}
    ctx = configurable.get(TOOL_CONTEXT_KEY)
    if not isinstance(ctx, ToolContext):
        raise RuntimeError(
            "dealership tool called without config['configurable']['tool_context'] "
            f"(a ToolContext); got {type(ctx).__name__}"
        )
    return ctx

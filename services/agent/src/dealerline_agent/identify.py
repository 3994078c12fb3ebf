"""Opening the dealership database, and recognising the caller at call start.

When a call comes in, the agent records the call on the session's state (call sid, caller
ID in E.164) and, when the number belongs to a customer on file, the customer and their
vehicles, so the greeting can use their name and the booking can skip the questions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dealerline_common.db.engine import (
    create_engine_from_url,
    database_url_from_env,
    session_factory,
)
from dealerline_common.db.phone import try_normalize_phone
from dealerline_common.logs import get_logger, mask_phone
from dealerline_common.messages import CallIncoming, StreamStarted
from dealerline_common.state import ConversationState, CustomerInfo, IdentityCheck
from dealerline_common.state_store import StateStore

from .dealership.repo import Dealership
from .settings import AgentSettings

log = get_logger(__name__)


def open_dealership(settings: AgentSettings, clock: Callable[[], datetime]) -> Dealership:
    url = settings.database_url or database_url_from_env()
    engine = create_engine_from_url(url)
    return Dealership(
        session_factory(engine),
        clock,
        default_timezone=settings.dealership_timezone,
        default_name=settings.dealership_name,
    )


async def identify_caller(
    store: StateStore, dealership: Dealership, started: StreamStarted | CallIncoming
) -> ConversationState:
    """Put the call's facts on the state; on a new call (its webhook's ``CallIncoming``,
    or the first stream's start), look the caller ID up."""
    phone = try_normalize_phone(started.from_number)
    resumed = isinstance(started, StreamStarted) and started.resumed
    known: CustomerInfo | None = None
    if phone and not resumed:
        known = await dealership.customer_by_phone(phone)

    def mutate(state: ConversationState) -> None:
        other_call = state.call_sid not in (None, started.call_sid)
        if other_call or (phone and state.caller_phone not in (None, phone)):
            # Another call or caller ID on the same session: what was proved is void.
            state.identity = IdentityCheck()
        state.call_sid = started.call_sid
        if phone:
            state.caller_phone = phone
        if known is not None and state.customer is None:
            state.customer = known

    state = await store.update(started.session_id, mutate)
    log.info(
        "call recorded",
        session_id=started.session_id,
        caller=mask_phone(phone),
        recognised=known is not None,
    )
    return state

"""The tool objects the LLM is given: each tool's name, description and argument schema
(exactly what the LLM sees), and the wrapper that runs a tool inside a turn.

The wrapper takes the RunnableConfig that LangChain injects (never part of the schema),
whose ``configurable["tool_context"]`` is the turn's :class:`~..context.ToolContext`;
it turns the repository's refusals into ``ERROR:`` content, and a database outage into
an ``ERROR:`` that tells the LLM to offer a person or a callback instead of failing the
turn, and returns the tool's :class:`~..effects.ToolEffect` as the JSON artifact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from dealerline_common import tracing
from dealerline_common.logs import get_logger

from ..context import ToolContext, tool_context
from ..effects import ToolEffect
from ..repo import DealershipError
from .appointments import cancel_appointment, list_appointments, reschedule_appointment
from .args import (
    BookArgs,
    CallbackArgs,
    CancelArgs,
    CheckAvailabilityArgs,
    CheckCodeArgs,
    ClearSlotArgs,
    CreateCustomerArgs,
    EndCallArgs,
    HoursArgs,
    HumanArgs,
    LookupCustomerArgs,
    NoArgs,
    RescheduleArgs,
    SearchFaqArgs,
    SetSlotArgs,
    UpdateCustomerArgs,
    VehicleArgs,
    VerifyArgs,
)
from .booking import (
    book_appointment,
    check_availability,
    clear_booking_slot,
    get_booking_progress,
    set_booking_slot,
)
from .customers import add_or_update_vehicle, create_customer, lookup_customer, update_customer
from .handoff import end_call, request_callback, request_human_agent
from .information import get_dealership_hours, list_services, search_faq
from .replies import SYSTEM_DOWN, Result
from .verification import check_verification_code, send_verification_code, verify_identity

__all__ = ["build_tools", "tool_names"]

log = get_logger(__name__)

A = TypeVar("A", bound=BaseModel)


def _make_tool(
    name: str,
    description: str,
    schema: type[A],
    impl: Callable[[ToolContext, A], Awaitable[Result]],
) -> BaseTool:
    async def run(config: RunnableConfig, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        ctx = tool_context(config)
        args = schema.model_validate(kwargs)
        try:
            with tracing.span(f"agent.tool {name}", session_id=ctx.session_id):
                content, effect = await impl(ctx, args)
        except DealershipError as exc:
            content, effect = f"ERROR: {exc}.", ToolEffect()
        except (SQLAlchemyError, OSError):
            log.exception("dealership database failed", tool=name, session_id=ctx.session_id)
            content, effect = SYSTEM_DOWN, ToolEffect()
        log.info(
            "tool ran", tool=name, session_id=ctx.session_id, ok=not content.startswith("ERROR")
        )
        return content, effect.model_dump(mode="json")

    run.__name__ = name
    return StructuredTool.from_function(
        coroutine=run,
        name=name,
        description=description,
        args_schema=schema,
        response_format="content_and_artifact",
    )


_TOOLS: list[tuple[str, str, type[BaseModel], Callable[[ToolContext, Any], Awaitable[Result]]]] = [
    (
        "lookup_customer",
        "Find the caller's customer record. With no arguments it uses the caller ID; or pass "
        "the phone number they give, or their name. Do this before booking. Their "
        "appointments, vehicles and contact details need a verified caller.",
        LookupCustomerArgs,
        lookup_customer,
    ),
    (
        "verify_identity",
        "Verify the caller as the customer found, with one fact only they know: licence "
        "plate, last 6 characters of the VIN, or the service they booked. Works only when "
        "the caller ID is the number on file; never tell the caller what is on file.",
        VerifyArgs,
        verify_identity,
    ),
    (
        "send_verification_code",
        "Text a one-time 6-digit code to the customer's number on file, to verify a caller "
        "who cannot verify with a fact (or calls from another number).",
        NoArgs,
        send_verification_code,
    ),
    (
        "check_verification_code",
        "Check the code the caller read out or keyed in from the text.",
        CheckCodeArgs,
        check_verification_code,
    ),
    (
        "create_customer",
        "Create a customer record for a new caller once you have their name (the caller ID "
        "is used as phone unless they give another). Only after lookup_customer found nothing.",
        CreateCustomerArgs,
        create_customer,
    ),
    (
        "update_customer",
        "Change the verified caller's name, email or phone on file (the old phone or email "
        "is told of the change).",
        UpdateCustomerArgs,
        update_customer,
    ),
    (
        "add_or_update_vehicle",
        "Save the caller's vehicle: make, model and year for a new one; VIN, plate or "
        "mileage to complete one; vehicle_id to update a specific one. Needs a verified "
        "caller.",
        VehicleArgs,
        add_or_update_vehicle,
    ),
    (
        "set_booking_slot",
        "Record one detail of the service booking as soon as the caller gives it: service, "
        "date, time, vehicle_id (a car on file), vehicle (their description) or notes.",
        SetSlotArgs,
        set_booking_slot,
    ),
    (
        "clear_booking_slot",
        'Forget one booking detail the caller takes back, or "all" to drop the booking.',
        ClearSlotArgs,
        clear_booking_slot,
    ),
    (
        "get_booking_progress",
        "What the booking in progress has and still needs.",
        NoArgs,
        get_booking_progress,
    ),
    (
        "check_availability",
        "Check free appointment times for a service on a date, or whether one time is free "
        "(offers the nearest free times when it is not). Use before proposing a time.",
        CheckAvailabilityArgs,
        check_availability,
    ),
    (
        "book_appointment",
        "Book the appointment from the booking slots (service, date, time, vehicle). First "
        "call it with confirmed=false to get the read-back; confirmed=true only after the "
        "caller agreed to it.",
        BookArgs,
        book_appointment,
    ),
    (
        "list_appointments",
        "The verified caller's upcoming appointments with their ids.",
        NoArgs,
        list_appointments,
    ),
    (
        "reschedule_appointment",
        "Move one of the caller's appointments (id from list_appointments) to a new date and "
        "time; confirmed=true only after the caller agreed to the read-back.",
        RescheduleArgs,
        reschedule_appointment,
    ),
    (
        "cancel_appointment",
        "Cancel one of the caller's appointments (id from list_appointments); "
        "confirmed=true only after the caller confirmed.",
        CancelArgs,
        cancel_appointment,
    ),
    (
        "search_faq",
        "Answers to general questions (payment, loaners, warranty, directions, policies). "
        "Use it instead of guessing.",
        SearchFaqArgs,
        search_faq,
    ),
    (
        "list_services",
        "The services offered, with duration and price range.",
        NoArgs,
        list_services,
    ),
    (
        "get_dealership_hours",
        "Opening hours: the whole week with upcoming holidays and the address, or one date's "
        "hours.",
        HoursArgs,
        get_dealership_hours,
    ),
    (
        "request_human_agent",
        "Connect the caller with a team member when they ask for a person or you cannot "
        "help. The call to staff starts in the background; keep talking with the caller.",
        HumanArgs,
        request_human_agent,
    ),
    (
        "request_callback",
        "Take a callback request when nobody on the team could be reached, or when the "
        "caller asks to be called back: when they want the call (their words) and what it "
        "is about. Uses the caller ID (or the number on file) as the number to call.",
        CallbackArgs,
        request_callback,
    ),
    (
        "end_call",
        "End the call after the caller says goodbye or has nothing else.",
        EndCallArgs,
        end_call,
    ),
]


def build_tools() -> list[BaseTool]:
    """Fresh tool objects for one agent (they hold no state; context comes per call)."""
    return [_make_tool(name, desc, schema, impl) for name, desc, schema, impl in _TOOLS]


def tool_names() -> list[str]:
    return [name for name, *_ in _TOOLS]

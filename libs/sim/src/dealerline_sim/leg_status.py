"""A call leg's status as Twilio's REST API and status callbacks show it.

The REST Call resource (``GET Calls/{sid}.json``, ``initiated`` shown as ``queued``), the
parameters every request about a call carries, and the legal status changes: status moves
``queued → initiated → ringing → in-progress → completed`` (or ends
``busy``/``no-answer``/``failed``/``canceled``). Status callbacks go out for the subscribed
events (``initiated ringing answered completed``; ``completed`` alone when none was given);
a final one carries ``CallDuration``, ``Duration`` (billed minutes) and ``SipResponseCode``.
"""

from __future__ import annotations

import math
from typing import Any, Final, Protocol

from dealerline_sim.timeline import SimClock
from dealerline_sim.twiml import SimulatorError

__all__ = [
    "API_VERSION",
    "FINAL_STATUSES",
    "CallView",
    "call_resource",
    "callback_event",
    "check_status_change",
    "default_call_params",
    "final_callback_params",
    "format_number",
    "subresource_uris",
    "subscribed_events",
]

API_VERSION: Final = "2010-04-01"
FINAL_STATUSES: Final = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_NEXT: Final[dict[str, frozenset[str]]] = {
    "queued": frozenset({"initiated", "canceled", "failed"}),
    "initiated": frozenset({"ringing", "canceled", "failed", "busy"}),
    "ringing": frozenset({"in-progress", "busy", "no-answer", "failed", "canceled", "completed"}),
    "in-progress": frozenset({"completed"}),
}
_EVENT_OF: Final = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}
_SIP_CODE: Final = {
    "completed": "200",
    "busy": "486",
    "no-answer": "487",
    "canceled": "487",
    "failed": "404",
}
_SUBRESOURCES: Final = (
    ("notifications", "Notifications"),
    ("recordings", "Recordings"),
    ("payments", "Payments"),
    ("events", "Events"),
    ("siprec", "Siprec"),
    ("streams", "Streams"),
    ("transcriptions", "Transcriptions"),
    ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
    ("user_defined_messages", "UserDefinedMessages"),
)


def check_status_change(sid: str, old: str, new: str) -> None:
    """Raise :class:`SimulatorError` unless ``old → new`` is a change Twilio makes."""
    if new not in _NEXT.get(old, frozenset()):
        raise SimulatorError(f"call {sid}: illegal status change {old} → {new}")


def subscribed_events(events: frozenset[str], callback: str | None) -> frozenset[str]:
    """``StatusCallbackEvent`` as given; ``completed`` alone when a callback has none."""
    return events or (frozenset({"completed"}) if callback else frozenset())


def callback_event(status: str) -> str | None:
    """The ``StatusCallbackEvent`` a status belongs to (None for ``queued``)."""
    return "completed" if status in FINAL_STATUSES else _EVENT_OF.get(status)


def final_callback_params(status: str, duration_s: int) -> dict[str, str]:
    """What a final status callback adds: duration, billed minutes, SIP response code."""
    return {
        "CallDuration": str(duration_s),
        "Duration": str(math.ceil(duration_s / 60)) if duration_s else "0",
        "SipResponseCode": _SIP_CODE[status],
    }


def default_call_params(
    *, account_sid: str, sid: str, direction: str, from_number: str, to_number: str
) -> dict[str, str]:
    """The parameters Twilio sends about a call it made (no incoming webhook to copy)."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": sid,
        "Called": to_number,
        "Caller": from_number,
        "Direction": direction,
        "From": from_number,
        "To": to_number,
        "CalledCountry": "US",
        "CallerCountry": "US",
        "FromCountry": "US",
        "ToCountry": "US",
    }


def subresource_uris(base: str) -> dict[str, str]:
    """The Call resource's ``subresource_uris`` under ``base`` (``…/Calls/{sid}``)."""
    return {name: f"{base}/{path}.json" for name, path in _SUBRESOURCES}


class CallView(Protocol):
    """What the REST Call resource shows of a leg."""

    sid: str
    account_sid: str
    parent_call_sid: str | None
    direction: str
    from_number: str
    to_number: str
    phone_number_sid: str
    status: str
    answered_by: str | None
    created_sim_s: float
    updated_sim_s: float
    start_sim_s: float | None
    end_sim_s: float | None

    @property
    def rest_status(self) -> str: ...

    @property
    def duration_s(self) -> int | None: ...


def call_resource(leg: CallView, clock: SimClock) -> dict[str, Any]:
    """The REST Call resource (``api.v2010.account.call`` of twilio-oai)."""
    base = f"/{API_VERSION}/Accounts/{leg.account_sid}/Calls/{leg.sid}"
    final_ok = leg.status == "completed"
    return {
        "sid": leg.sid,
        "date_created": clock.rfc2822(leg.created_sim_s),
        "date_updated": clock.rfc2822(leg.updated_sim_s),
        "parent_call_sid": leg.parent_call_sid,
        "account_sid": leg.account_sid,
        "to": leg.to_number,
        "to_formatted": format_number(leg.to_number),
        "from": leg.from_number,
        "from_formatted": format_number(leg.from_number),
        "phone_number_sid": leg.phone_number_sid,
        "status": leg.rest_status,
        "start_time": clock.rfc2822(leg.start_sim_s) if leg.start_sim_s is not None else None,
        "end_time": clock.rfc2822(leg.end_sim_s) if leg.end_sim_s is not None else None,
        "duration": str(leg.duration_s or 0) if final_ok else None,
        "price": None,
        "price_unit": "USD",
        "direction": leg.direction,
        "answered_by": leg.answered_by,
        "api_version": API_VERSION,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": "0",
        "trunk_sid": None,
        "uri": base + ".json",
        "subresource_uris": subresource_uris(base),
    }


def format_number(number: str) -> str:
    """Twilio's ``*_formatted``: ``(415) 555-0100`` for NANP numbers, else as given."""
    if len(number) == 12 and number.startswith("+1") and number[1:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number

"""The simulated Twilio REST API's Messages resource: ``Messages.json`` create (validated
as Twilio does) and list, ``Messages/{Sid}.json`` fetch; every accepted text kept as a
:class:`SentMessage`, and a switchable outage (``fail`` / ``heal``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from dealerline_common.logs import mask_phone
from dealerline_sim.phone import new_sid
from dealerline_sim.rest_request import (
    API,
    E164,
    RestError,
    RestForm,
    Serve,
    not_found,
    page,
    route,
)
from dealerline_sim.timeline import Timeline

_BODY_MAX = 1600
# GSM 03.38's basic set: a text of only these is 160 characters a segment, else UCS-2 (70).
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def _segments(body: str) -> int:
    single, multi = (160, 153) if set(body) <= _GSM7 else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


def _rfc2822(at: datetime | None) -> str | None:
    return format_datetime(at, usegmt=True) if at is not None else None


@dataclass
class SentMessage:
    """One text the REST API accepted (``tw.messages``)."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    params: dict[str, Any] = field(default_factory=dict)  # the create request's form

    def resource(self) -> dict[str, Any]:
        """Twilio's Message resource (``api.v2010.account.message``)."""
        uri = f"{API}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": _rfc2822(self.created_at),
            "date_sent": None,
            "date_updated": _rfc2822(self.created_at),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


class Messages:
    """The texts an account sent, and whether the Messages API is down.

    ``owned_numbers`` (shared with the simulator; empty: any ``From``) are the numbers a
    text may come from."""

    def __init__(self, account_sid: str, owned_numbers: set[str], timeline: Timeline) -> None:
        self.account_sid = account_sid
        self.owned_numbers = owned_numbers
        self.timeline = timeline
        self.sent: list[SentMessage] = []
        self._down: tuple[int, int | None] | None = None  # (status, times left)

    def fail(self, *, status: int = 503, times: int | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (4xx or 5xx)")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None until healed)")
        self._down = (status, times)

    def heal(self) -> None:
        self._down = None

    def sent_to(self, number: str) -> list[SentMessage]:
        return [m for m in self.sent if m.to == number]

    def routes(self, acct: str, serve: Serve) -> list[Route]:
        async def create(request: Request, form: RestForm) -> tuple[int, Any]:
            return 201, self.create(form).resource()

        async def list_(request: Request, form: RestForm) -> tuple[int, Any]:
            return 200, self.page_of(request)

        async def fetch(request: Request, form: RestForm) -> tuple[int, Any]:
            return 200, self.resource_of(request)

        return [
            route(acct + "/Messages.json", serve, {"GET": list_, "POST": create}),
            route(acct + "/Messages/{sid}.json", serve, {"GET": fetch}),
        ]

    def create(self, form: RestForm) -> SentMessage:
        self._answer_outage()
        to, from_ = self._endpoints(form)
        if form.get("MediaUrl") or form.get("ContentSid"):
            raise RestError(
                400, 21620, "MediaUrl and ContentSid are not supported by the simulator"
            )
        body = form.get("Body")
        if not body:
            raise RestError(400, 21602, "Message body is required.")
        if len(body) > _BODY_MAX:
            raise RestError(
                400,
                21617,
                f"The concatenated message body exceeds the {_BODY_MAX} character limit.",
            )
        message = SentMessage(
            sid=new_sid("SM"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            body=body,
            params=form.as_dict(),
        )
        self.sent.append(message)
        self.timeline.record("message", None, sid=message.sid, to=to, from_=from_, body=body)
        return message

    def _answer_outage(self) -> None:
        """While the API is down: Twilio's error body (code 20000 + status), one fewer
        time left."""
        if self._down is None:
            return
        status, times = self._down
        if times is not None:
            self._down = (status, times - 1) if times > 1 else None
        raise RestError(status, 20000 + status, "Service unavailable (simulated outage)")

    def _endpoints(self, form: RestForm) -> tuple[str, str]:
        to, from_ = form.get("To"), form.get("From")
        if not to:
            raise RestError(400, 21604, "A 'To' phone number is required.")
        if not from_:
            if form.get("MessagingServiceSid"):
                raise RestError(400, 21704, "MessagingServiceSid is not supported by the simulator")
            raise RestError(400, 21603, "A 'From' phone number is required.")
        if not E164.match(to):
            raise RestError(400, 21211, f"Invalid 'To' Phone Number: {mask_phone(to)}")
        if not E164.match(from_):
            raise RestError(400, 21212, f"Invalid 'From' Phone Number: {mask_phone(from_)}")
        if self.owned_numbers and from_ not in self.owned_numbers:
            raise RestError(
                400,
                21606,
                f"The From phone number {mask_phone(from_)} is not a valid, SMS-capable inbound "
                "phone number or short code for your account.",
            )
        return to, from_

    def page_of(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        messages = list(self.sent)
        for name, attr in (("To", "to"), ("From", "from_")):
            if q.get(name):
                messages = [m for m in messages if getattr(m, attr) == q[name]]
        messages.reverse()  # newest first, as Twilio lists them
        return page(request, "messages", [m.resource() for m in messages])

    def resource_of(self, request: Request) -> dict[str, Any]:
        sid = str(request.path_params["sid"])
        for message in self.sent:
            if message.sid == sid:
                return message.resource()
        raise not_found(request)

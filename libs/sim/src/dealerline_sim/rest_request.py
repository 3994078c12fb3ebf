"""What every resource of the simulated Twilio REST API shares: form bodies with repeated
keys, Twilio's error body, HTTP Basic auth against the account, serving a handler (auth,
the ``rest`` timeline event, the log line), paging, and the parameter checks (numbers,
URLs, HTTP methods, inline TwiML)."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dealerline_common.logs import get_logger, mask_phone
from dealerline_sim.timeline import Timeline
from dealerline_sim.twiml import TwimlError, parse_twiml

log = get_logger(__name__)

API = "/2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_TWIML_MAX = 4000


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's REST error body."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


class RestForm:
    """A form body with repeated keys (``StatusCallbackEvent`` comes once per value)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str) -> str | None:
        for key, value in self.pairs:
            if key == name:
                return value
        return None

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.pairs:
            if key in out:
                prev = out[key]
                out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                out[key] = value
        return out


class RestError(Exception):
    """Ends a REST request with Twilio's error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        resp = twilio_error(self.status, self.code, self.message)
        if self.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return resp


def not_found(request: Request) -> RestError:
    return RestError(404, 20404, f"The requested resource {request.url.path} was not found")


# A resource handler: the request and its form → (HTTP status, JSON body or None for 204).
Handler = Callable[[Request, RestForm], Awaitable[tuple[int, Any]]]
Serve = Callable[[Request, Handler], Awaitable[Response]]


def authorize(
    request: Request, account_sid: str, auth_token: str, api_keys: Mapping[str, str]
) -> None:
    """HTTP Basic auth with the account sid and auth token, or an API key (else 401 code
    20003); the path's account must be this one (else 404 code 20404)."""
    header = request.headers.get("authorization", "")
    user = password = ""
    if header[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
    ok = (user == account_sid and secrets.compare_digest(password, auth_token)) or (
        user in api_keys and secrets.compare_digest(password, api_keys[user])
    )
    if not ok:
        raise RestError(401, 20003, "Authenticate")
    if request.path_params.get("account") != account_sid:
        raise not_found(request)


async def read_form(request: Request) -> RestForm:
    if request.method != "POST":
        return RestForm([])
    body = (await request.body()).decode("utf-8", errors="replace")
    return RestForm(parse_qsl(body, keep_blank_values=True))


async def serve(
    request: Request,
    handler: Handler,
    check_auth: Callable[[Request], None],
    timeline: Timeline,
) -> Response:
    """Authorize, run ``handler``, answer its JSON (or Twilio's error body); every request
    is a ``rest`` timeline event."""
    form = await read_form(request)
    code: int | None = None
    body: Any = None
    try:
        check_auth(request)
        status, body = await handler(request, form)
        response: Response = (
            Response(status_code=204) if body is None else JSONResponse(body, status)
        )
    except RestError as exc:
        response = exc.response()
        code = exc.code
    params = form.as_dict()
    timeline.record(
        "rest",
        _call_sid_of(request, response, body),
        method=request.method,
        path=request.url.path,
        params=params,
        http_status=response.status_code,
        code=code,
    )
    log.info(
        "twilio_rest",
        method=request.method,
        path=request.url.path,
        status=response.status_code,
        code=code,
        to=mask_phone(str(params.get("To", ""))),
    )
    return response


def _call_sid_of(request: Request, response: Response, body: Any) -> str | None:
    """The call a request is about: the path's ``CA…`` sid, or the call it created."""
    sid = request.path_params.get("sid")
    if isinstance(sid, str) and sid.startswith("CA"):
        return sid
    if response.status_code == 201 and isinstance(body, dict):
        created = body.get("sid")
        return created if isinstance(created, str) and created.startswith("CA") else None
    return None


def route(path: str, serve_with: Serve, handlers: Mapping[str, Handler]) -> Route:
    """A route answering each HTTP method in ``handlers`` with its handler."""

    async def endpoint(request: Request) -> Response:
        return await serve_with(request, handlers[request.method])

    return Route(path, endpoint, methods=list(handlers))


def page(request: Request, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of a list resource (``PageSize`` 1–1000, default 50; ``Page`` from 0)."""
    q = request.query_params
    try:
        size = max(1, min(1000, int(q.get("PageSize", "50"))))
        number = max(0, int(q.get("Page", "0")))
    except ValueError as exc:
        raise RestError(400, 20001, "Page and PageSize must be integers") from exc
    start = number * size
    chunk = items[start : start + size]
    path = request.url.path

    def uri(p: int) -> str:
        return f"{path}?PageSize={size}&Page={p}"

    return {
        key: chunk,
        "end": start + max(0, len(chunk) - 1),
        "first_page_uri": uri(0),
        "next_page_uri": uri(number + 1) if start + size < len(items) else None,
        "page": number,
        "page_size": size,
        "previous_page_uri": uri(number - 1) if number > 0 else None,
        "start": start,
        "uri": uri(number),
    }


def valid_endpoint(value: str) -> bool:
    """An E.164 number, or a ``client:``/``sip:`` address."""
    return bool(E164.match(value)) or value.startswith(("client:", "sip:"))


def valid_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def http_method(value: str | None, name: str) -> str:
    """``Method``-style parameters: GET or POST (default POST)."""
    if value is None or value == "":
        return "POST"
    if value.upper() not in ("GET", "POST"):
        raise RestError(400, 20001, f"{name} must be GET or POST, not {value}")
    return value.upper()


def check_twiml(twiml: str) -> None:
    """Inline ``Twiml``: at most 4000 characters of valid TwiML."""
    if len(twiml) > _TWIML_MAX:
        raise RestError(400, 20001, f"Twiml is longer than {_TWIML_MAX} characters")
    try:
        parse_twiml(twiml)
    except TwimlError as exc:
        raise RestError(400, 12100, f"Twiml is not valid TwiML: {exc}") from exc

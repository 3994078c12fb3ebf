"""A leg's requests to the application: signed webhooks and the TwiML they answer.

Every request carries the call's parameters and is recorded as a ``webhook`` timeline
event. A TwiML fetch that fails (no answer, not 200, not XML, bad TwiML) is what Twilio
reports as 11200/12300/12100: an ``error`` event, "an application error has occurred"
said to the party, and a hang-up.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

from dealerline_sim.leg_context import END, Doc, End, RunningLeg
from dealerline_sim.twiml import SimulatorError, TwimlError, parse_twiml

__all__ = ["APPLICATION_ERROR_SAY", "application_error", "fetch", "request", "resolve"]

APPLICATION_ERROR_SAY: Final = "We are sorry, an application error has occurred. Goodbye."


def resolve(doc_url: str | None, url: str) -> str:
    """``url`` (maybe relative) against the document it came from; must be http(s)."""
    resolved = urljoin(doc_url or "", url)
    if urlsplit(resolved).scheme not in ("http", "https"):
        raise SimulatorError(f"cannot resolve {url!r} (document URL {doc_url!r})")
    return resolved


async def request(
    leg: RunningLeg, url: str, method: str, purpose: str, extra: dict[str, str] | None = None
) -> httpx.Response | None:
    """One webhook with the call's parameters (plus ``extra``); None if it got no answer."""
    params = leg.call_params()
    params.update(extra or {})
    status: int | None = None
    body = ""
    error: str | None = None
    resp: httpx.Response | None = None
    try:
        resp = await leg.ctx.webhooks.request(method, url, params)
        status = resp.status_code
        body = resp.text[:4000]
    except httpx.HTTPError as exc:
        error = repr(exc)
    leg.ctx.timeline.record(
        "webhook",
        leg.sid,
        url=url,
        method=method,
        params=params,
        http_status=status,
        body=body,
        purpose=purpose,
        error=error,
    )
    return resp


async def fetch(
    leg: RunningLeg, url: str, method: str, purpose: str, extra: dict[str, str] | None = None
) -> Doc | End:
    """Request TwiML and parse it; any failure is an application error (hang-up)."""
    resp = await request(leg, url, method, purpose, extra)
    if resp is None:
        return await application_error(leg, 11200, f"HTTP retrieval failure: {url}")
    if resp.status_code != 200:
        return await application_error(
            leg, 11200, f"HTTP {resp.status_code} from {url} ({purpose})"
        )
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("text/xml", "application/xml"):
        return await application_error(
            leg, 12300, f"Invalid Content-Type {ctype!r} from {url} ({purpose})"
        )
    try:
        verbs = parse_twiml(resp.text)
    except TwimlError as exc:
        return await application_error(leg, 12100, f"{url} ({purpose}): {exc}")
    return Doc(verbs, url)


async def application_error(leg: RunningLeg, code: int, message: str) -> End:
    """Twilio's answer to an unusable document: report, apologise, hang up."""
    leg.ctx.error(leg.sid, code, message)
    leg.heard.append(APPLICATION_ERROR_SAY)
    leg.ctx.timeline.record("say", leg.sid, text=APPLICATION_ERROR_SAY, voice=None, language=None)
    await leg.hang_up_from_twiml("error")
    return END

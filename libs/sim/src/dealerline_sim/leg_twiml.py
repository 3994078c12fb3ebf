"""Executing TwiML on a call leg, verb by verb.

``<Say>`` is recorded as heard (~2.5 words per simulated second), ``<Play>`` and ``<Pause>``
take their time, ``<Gather>`` takes the scripted human's keys (→ POST to ``action`` with
``Digits`` and ``FinishedOnKey``; no input → the next verb), ``<Redirect>`` fetches the next
document, ``<Hangup/>``/``<Reject/>`` end the call, ``<Dial><Conference>`` is
``dealerline_sim.leg_dial``'s, and ``<Connect><Stream>`` opens a new Media Stream on the
customer's call (when it ends, the Connect's ``action`` or the call is over). Running out
of verbs hangs up; other verbs are reported (12200) and skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dealerline_sim.leg_context import END, Doc, End, RunningLeg, Step
from dealerline_sim.leg_dial import dial
from dealerline_sim.leg_webhooks import application_error, fetch, request, resolve
from dealerline_sim.twiml import (
    SimulatorError,
    TwimlError,
    TwimlVerb,
    parse_twiml,
    stream_instruction,
)

if TYPE_CHECKING:
    from dealerline_sim.call_records import StreamRecord

__all__ = ["after_redirect", "run_document", "run_first_stream", "run_inline"]


def _speech_s(text: str) -> float:
    return max(0.5, len(text.split()) / 2.5)


async def run_inline(leg: RunningLeg, twiml: str) -> None:
    """Run TwiML given inline (REST ``Twiml``); unparsable TwiML is error 12100."""
    try:
        verbs = parse_twiml(twiml)
    except TwimlError as exc:
        await application_error(leg, 12100, f"Twiml parameter: {exc}")
        return
    await run_document(leg, Doc(verbs, None))


async def run_document(leg: RunningLeg, doc: Doc, start: int = 0) -> None:
    """Run ``doc`` from verb ``start`` (and the documents it leads to) until the leg ends."""
    i = start
    while not leg.is_final:
        if i >= len(doc.verbs):
            await leg.hang_up_from_twiml("end-of-twiml")
            return
        verb = doc.verbs[i]
        i += 1
        step = await _verb(leg, verb, doc.url)
        if isinstance(step, End):
            return
        if isinstance(step, Doc):
            doc, i = step, 0


async def after_redirect(
    leg: RunningLeg,
    url: str | None,
    method: str,
    twiml: str | None,
    dial_action: tuple[str, str] | None,
) -> None:
    """After a REST redirect: the interrupted ``<Dial>``'s action (its answer ignored),
    then the new ``Twiml`` or the document at ``url``."""
    if dial_action is not None:
        action_url, action_method = dial_action
        await request(
            leg,
            action_url,
            action_method,
            "dial-action",
            {"DialCallStatus": "completed", "DialCallDuration": "0"},
        )
    if twiml is not None:
        await run_inline(leg, twiml)
        return
    assert url is not None
    doc = await fetch(leg, url, method, "redirect")
    if isinstance(doc, Doc):
        await run_document(leg, doc)


async def run_first_stream(leg: RunningLeg, stream: StreamRecord) -> None:
    """The incoming call's own ``<Connect><Stream>``: when it ends, go on with the rest
    of that first document (or the Connect's ``action``)."""
    call = leg.customer
    assert call is not None
    verbs = parse_twiml(call.instruction.twiml)
    index = next(i for i, v in enumerate(verbs) if v.tag == "Connect")
    doc_url = call.webhook_url or None
    step = await _after_stream(leg, stream, verbs[index], doc_url)
    if isinstance(step, End):
        return
    if isinstance(step, Doc):
        await run_document(leg, step)
    else:
        await run_document(leg, Doc(verbs, doc_url), start=index + 1)


async def _verb(leg: RunningLeg, verb: TwimlVerb, doc_url: str | None) -> Step:
    tag = verb.tag
    clock = leg.ctx.clock
    if tag == "Say":
        loops = max(1, int(verb.number_attr("loop", 1)))
        leg.heard.append(verb.text)
        leg.ctx.timeline.record(
            "say", leg.sid, text=verb.text, voice=verb.attr("voice"), language=verb.attr("language")
        )
        await clock.sleep(_speech_s(verb.text) * loops)
        return None
    if tag == "Play":
        leg.ctx.timeline.record("play", leg.sid, url=verb.text)
        await clock.sleep(1.0 * max(1, int(verb.number_attr("loop", 1))))
        return None
    if tag == "Pause":
        length = verb.number_attr("length", 1.0)
        leg.ctx.timeline.record("pause", leg.sid, length=length)
        await clock.sleep(length)
        return None
    if tag in ("Hangup", "Reject"):
        await leg.hang_up_from_twiml("twiml")
        return END
    if tag == "Redirect":
        if not verb.text:
            return await application_error(leg, 12200, "<Redirect> has no URL")
        method = (verb.attr("method") or "POST").upper()
        return await fetch(leg, resolve(doc_url, verb.text), method, "redirect")
    if tag == "Gather":
        return await _gather(leg, verb, doc_url)
    if tag == "Dial":
        return await dial(leg, verb, doc_url)
    if tag == "Connect":
        return await _connect(leg, verb, doc_url)
    leg.ctx.error(leg.sid, 12200, f"<{tag}> is not supported by the simulator; skipped")
    return None


async def _gather(leg: RunningLeg, verb: TwimlVerb, doc_url: str | None) -> Step:
    finish_on_key = verb.attrs.get("finishOnKey", "#")
    num_digits = int(verb.number_attr("numDigits", 0)) or None
    timeout = verb.number_attr("timeout", 5.0)
    action_attr = verb.attr("action")
    method = (verb.attr("method") or "POST").upper()
    action = resolve(doc_url, action_attr) if action_attr else doc_url
    for child in verb.children:
        await _verb(leg, child, doc_url)
    index = leg.gathers
    leg.gathers += 1
    digits, finished, timed_out = await _press_keys(leg, index, finish_on_key, num_digits, timeout)
    leg.ctx.timeline.record(
        "gather",
        leg.sid,
        digits=digits,
        finished_on_key=finished,
        timed_out=timed_out,
        action=action,
        index=index,
    )
    if digits or verb.bool_attr("actionOnEmptyResult", False):
        if action is None:
            return await application_error(leg, 12200, "<Gather> has no action to post to")
        return await fetch(
            leg,
            action,
            method,
            "gather",
            {"Digits": digits, "FinishedOnKey": finished, "msg": "Gather End"},
        )
    return None


async def _press_keys(
    leg: RunningLeg, index: int, finish_on_key: str, num_digits: int | None, wait_s: float
) -> tuple[str, str, bool]:
    """The human's keys for the ``index``-th ``<Gather>``, as Twilio collects them:
    returns the digits, the finishing key (or "") and whether it timed out."""
    clock = leg.ctx.clock
    keys = leg.human.keys_for(index) if leg.human is not None else None
    press_after = leg.human.press_after_s if leg.human is not None else 0.0
    digits = ""
    finished = ""
    timed_out = True
    if keys is not None and press_after <= wait_s:
        await clock.sleep(press_after)
        leg.pressed.append(keys)
        for key in keys:
            if finish_on_key and key == finish_on_key:
                finished, timed_out = key, False
                break
            digits += key
            if num_digits is not None and len(digits) >= num_digits:
                timed_out = False
                break
        if timed_out:
            await clock.sleep(wait_s)  # waits for more keys, then submits what it has
    else:
        await clock.sleep(wait_s)
    return digits, finished, timed_out


async def _connect(leg: RunningLeg, verb: TwimlVerb, doc_url: str | None) -> Step:
    call = leg.customer
    if call is None:
        leg.ctx.error(leg.sid, 31920, "<Connect><Stream> on a scripted human leg; skipped")
        return None
    try:
        instruction = stream_instruction(verb)
    except TwimlError as exc:
        return await application_error(leg, 12200, str(exc))
    try:
        stream = await call.open_stream(instruction)
    except SimulatorError as exc:
        leg.ctx.error(leg.sid, 31920, f"stream failed to open: {exc}")
        if call.streams and call.streams[-1].end_reason == "open-failed":
            return await _after_stream(leg, call.streams[-1], verb, doc_url)
        return None
    return await _after_stream(leg, stream, verb, doc_url)


async def _after_stream(
    leg: RunningLeg, stream: StreamRecord, connect: TwimlVerb, doc_url: str | None
) -> Step:
    await stream.closed.wait()
    if stream.end_reason in ("server-closed", "open-failed"):
        action = connect.attr("action")
        if action:
            return await fetch(
                leg,
                resolve(doc_url, action),
                (connect.attr("method") or "POST").upper(),
                "connect-action",
            )
        return None
    return END  # the caller hung up (the call's host hook finishes the leg)
